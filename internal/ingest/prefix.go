package ingest

import (
	"net/http"
	"strings"
)

// underPrefix serves h's routes under prefix (ROUTE_PREFIX, such as
// "/a7x"), so that a site's reverse proxy can forward one path of its own
// domain to GoTrack, out of the way of ad blockers' lists. The health
// checks stay at the root as well, where probes look for them; any other
// path outside the prefix is answered by h's catch-all 404. The HTTP
// metrics label routes without the prefix, so dashboards do not change.
func underPrefix(prefix string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := r.URL.Path
		rest, ok := strings.CutPrefix(path, prefix)
		switch {
		case ok && strings.HasPrefix(rest, "/"):
			path = rest
		case path == "/healthz" || path == "/readyz":
		default:
			path = "/"
		}
		r2 := new(http.Request)
		*r2 = *r
		u := *r.URL
		u.Path, u.RawPath = path, ""
		r2.URL = &u
		h.ServeHTTP(w, r2)
	})
}

// ValidRoutePrefix reports whether p can be ROUTE_PREFIX: empty, or a
// path of one or more segments of letters, digits and - _ . ~, starting
// with a slash and not ending with one.
func ValidRoutePrefix(p string) bool {
	if p == "" {
		return true
	}
	if p[0] != '/' || strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
		return false
	}
	for _, c := range p {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.ContainsRune("/-_.~", c)) {
			return false
		}
	}
	return !strings.Contains(p, "/./") && !strings.Contains(p, "/../") && !strings.HasSuffix(p, "/.") && !strings.HasSuffix(p, "/..")
}
