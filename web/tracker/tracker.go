// Package tracker serves gotrack.js, GoTrack's browser tracker. The script
// is built from src/gotrack.js with the npm toolchain pinned in
// package-lock.json (npm ci && npm run build) and committed, so that the
// gotrack binary serves it without Node.
package tracker

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Script is the built, minified gotrack.js.
//
//go:embed gotrack.min.js
var Script []byte

// MaxAge is how long browsers and caches may keep the script without
// asking again; after that the ETag makes the check a 304.
const MaxAge = 24 * time.Hour

// Handler serves the script with a strong ETag, a day of caching, CORS for
// any origin (it is public), and a gzip encoding for clients that take it.
func Handler() http.Handler {
	sum := sha256.Sum256(Script)
	tag := hex.EncodeToString(sum[:12])
	var zb bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&zb, gzip.BestCompression)
	zw.Write(Script)
	zw.Close()
	plain, zipped := `"`+tag+`"`, `"`+tag+`-gz"`
	cacheControl := "public, max-age=" + strconv.Itoa(int(MaxAge/time.Second))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("Cache-Control", cacheControl)
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Cross-Origin-Resource-Policy", "cross-origin")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Vary", "Accept-Encoding")
		body, etag := Script, plain
		if acceptsGzip(r.Header.Get("Accept-Encoding")) {
			body, etag = zb.Bytes(), zipped
			h.Set("Content-Encoding", "gzip")
		}
		h.Set("ETag", etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(body))
	})
}

func acceptsGzip(ae string) bool {
	for part := range strings.SplitSeq(ae, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			q, found := strings.CutPrefix(strings.TrimSpace(params), "q=")
			if !found {
				return true
			}
			v, err := strconv.ParseFloat(q, 64)
			return err == nil && v > 0
		}
	}
	return false
}
