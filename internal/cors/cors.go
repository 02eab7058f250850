// Package cors holds the one CORS origin decision that every ingest route
// (/collect, the pixel's preflight, the Segment API) shares.
package cors

import (
	"net/http"
	"slices"
)

// Allow sets the CORS response headers on w for a request from origin, and
// reports whether origin may make it. An empty origin is not a cross-origin
// browser request and is allowed without headers. An empty allowed list
// (CORS_ORIGINS unset) allows every origin with "*"; otherwise only the
// listed origins are echoed back, with "Vary: Origin".
func Allow(w http.Header, origin string, allowed []string) bool {
	if origin == "" {
		return true
	}
	if len(allowed) == 0 {
		w.Set("Access-Control-Allow-Origin", "*")
		return true
	}
	w.Add("Vary", "Origin")
	if !slices.Contains(allowed, origin) {
		return false
	}
	w.Set("Access-Control-Allow-Origin", origin)
	return true
}
