package ingest

import (
	"path"
	"testing"
)

// FuzzCleanPath checks cleanPath's shortcut against path.Clean alone.
func FuzzCleanPath(f *testing.F) {
	for _, p := range []string{"", "/", "/px.gif", "//px.gif", "/./collect", "/a/../b", "/collect/", "/a/.b", "/a.", "/..", "/.", "a/b", "/v1/t//"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		want := false
		if p != "" && p[0] == '/' {
			c := path.Clean(p)
			want = c == p || (p[len(p)-1] == '/' && c+"/" == p)
		}
		if got := cleanPath(p); got != want {
			t.Fatalf("cleanPath(%q) = %v, want %v", p, got, want)
		}
	})
}
