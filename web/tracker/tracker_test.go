package tracker

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSizeBudget keeps the script within 3 KB gzipped, as promised.
func TestSizeBudget(t *testing.T) {
	var b bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&b, gzip.DefaultCompression)
	zw.Write(Script)
	zw.Close()
	if b.Len() > 3<<10 {
		t.Errorf("gotrack.js is %d bytes gzipped, more than 3 KB", b.Len())
	}
	t.Logf("gotrack.js: %d bytes, %d gzipped", len(Script), b.Len())
}

func TestHandler(t *testing.T) {
	h := Handler()
	get := func(hdr ...string) *httptest.ResponseRecorder {
		r := httptest.NewRequest("GET", "/gotrack.js", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			r.Header.Set(hdr[i], hdr[i+1])
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	w := get()
	if w.Code != 200 || !bytes.Equal(w.Body.Bytes(), Script) {
		t.Fatalf("GET: %d, %d bytes", w.Code, w.Body.Len())
	}
	for k, want := range map[string]string{
		"Content-Type": "text/javascript; charset=utf-8", "Cache-Control": "public, max-age=86400",
		"Access-Control-Allow-Origin": "*", "Vary": "Accept-Encoding",
	} {
		if got := w.Header().Get(k); got != want {
			t.Errorf("%s: %q, want %q", k, got, want)
		}
	}
	etag := w.Header().Get("ETag")
	if len(etag) < 10 {
		t.Fatalf("ETag %q", etag)
	}
	if w := get("If-None-Match", etag); w.Code != 304 || w.Body.Len() != 0 {
		t.Errorf("If-None-Match: %d", w.Code)
	}

	z := get("Accept-Encoding", "br, gzip")
	if z.Header().Get("Content-Encoding") != "gzip" || z.Header().Get("ETag") == etag {
		t.Fatalf("gzip variant: %v", z.Header())
	}
	zr, err := gzip.NewReader(z.Body)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(zr); !bytes.Equal(b, Script) {
		t.Error("the gzip variant is not the script")
	}
	if w := get("Accept-Encoding", "gzip;q=0"); w.Header().Get("Content-Encoding") != "" {
		t.Error("gzip sent to a client that refuses it")
	}
}

// TestRebuildIsIdentical rebuilds the script from src/ with the pinned
// esbuild and compares it with the committed gotrack.min.js.
func TestRebuildIsIdentical(t *testing.T) {
	esbuild := filepath.Join("node_modules", "esbuild", "bin", "esbuild")
	if _, err := os.Stat(esbuild); err != nil {
		msg := "esbuild is not installed in web/tracker (scripts/test.sh runs npm ci there)"
		if os.Getenv("CI") != "" || os.Getenv("GOTRACK_TEST_STRICT") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg + "; skipping outside CI")
	}
	out := filepath.Join(t.TempDir(), "gotrack.min.js")
	cmd := exec.Command("npm", "run", "--silent", "build", "--", "--outfile="+out, "--log-level=warning")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("npm run build: %v\n%s", err, b)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, Script) {
		t.Errorf("rebuilding gives %d bytes that differ from the committed gotrack.min.js (%d bytes): run npm run build in web/tracker and commit", len(got), len(Script))
	}
}
