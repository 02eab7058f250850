package source

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const goodFile = `
sources:
  - id: shop-web
    write_keys: ["wk_shop_1"]
    origins: ["https://shop.example"]
    rate: 200/s
  - id: backend
    write_key_sha256: ["%s"]
`

func sha(s string) string { d := sha256.Sum256([]byte(s)); return hex.EncodeToString(d[:]) }

func good() string { return strings.Replace(goodFile, "%s", sha("wk_backend_1"), 1) }

func noFiles(string) ([]byte, error) { return nil, os.ErrNotExist }

func TestParse(t *testing.T) {
	set, err := Parse([]byte(good()), noFiles)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.IDs(), ","); got != "shop-web,backend" {
		t.Fatalf("ids %s", got)
	}
	shop := set.ByID("shop-web")
	if shop.Rate != 200 || shop.Burst != 400 {
		t.Errorf("rate %v burst %d, want 200 and the default burst 400", shop.Rate, shop.Burst)
	}
	for key, want := range map[string]string{"wk_shop_1": "shop-web", "wk_backend_1": "backend"} {
		if src := set.Lookup(key); src == nil || src.ID != want {
			t.Errorf("Lookup(%s) = %v, want %s", key, src, want)
		}
	}
	for _, key := range []string{"", "wk_shop_", "wk_shop_1 ", sha("wk_backend_1")} {
		if src := set.Lookup(key); src != nil {
			t.Errorf("Lookup(%q) = %s, want none", key, src.ID)
		}
	}
}

// TestParseErrors checks that every problem of a file is reported at once,
// and that no key is quoted in the errors.
func TestParseErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("tiny\n"), 0o600)
	file := `
sources:
  - id: Shop Web
    write_keys: ["wk_secret_dup"]
    rate: 10/d
  - id: b
    write_keys: ["wk_secret_dup"]
    origins: ["https://x.example/path"]
    burst: 5
  - id: b
    write_key_sha256: ["nothex"]
    rate: 0/s
    signing_secret_file: ` + filepath.Join(dir, "missing") + `
  - id: c
    write_keys: ["wk_c_12345"]
    signing_secret_file: ` + short + `
  - id: anonymous
`
	_, err := Parse([]byte(file), os.ReadFile)
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	for _, want := range []string{
		`source 1 ("Shop Web"): id is invalid; want [a-z0-9_-]{1,64}`,
		`source 1 ("Shop Web"): rate "10/d" has unit "d"`,
		`source 2 ("b"): a write key is also a key of source "Shop Web"`,
		`source 2 ("b"): origin "https://x.example/path" is malformed`,
		`source 2 ("b"): burst needs a rate`,
		`source 3 ("b"): duplicate id`,
		`source 3 ("b"): write_key_sha256[0] is malformed; want 64 hex digits`,
		`source 3 ("b"): rate "0/s" is not a rate`,
		`source 3 ("b"): signing_secret_file: open`,
		`source 4 ("c"): signing_secret_file ` + short + ` holds fewer than 16 bytes`,
		`source 5 ("anonymous"): id "anonymous" is reserved`,
		`source 5 ("anonymous"): has no write_keys`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error lacks %q:\n%s", want, msg)
		}
	}
	if strings.Contains(msg, "wk_secret_dup") {
		t.Errorf("error quotes a key:\n%s", msg)
	}
}

func TestParseStrict(t *testing.T) {
	for name, file := range map[string]string{
		"unknown field": "sources:\n  - id: a\n    write_keys: [wk_aaaaaaaa]\n    writekeys: [x]\n",
		"duplicate key": "sources:\n  - id: a\n    id: b\n    write_keys: [wk_aaaaaaaa]\n",
		"not a list":    "sources: {id: a}\n",
		"empty":         "",
	} {
		if _, err := Parse([]byte(file), noFiles); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

type env struct {
	auth *Auth
	reg  *prometheus.Registry
	path string
	log  *bytes.Buffer
}

func newEnv(t *testing.T, content string) *env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sources.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	var log bytes.Buffer
	a, err := New(Options{Mode: ModeKey, Path: path, Set: set}, reg, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return &env{auth: a, reg: reg, path: path, log: &log}
}

func (e *env) failures(src, reason string) float64 {
	return testutil.ToFloat64(e.auth.failures.WithLabelValues(src, reason))
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// TestCheck covers every outcome of a key: none, unknown, a wrong origin,
// and a good key by each way of passing it.
func TestCheck(t *testing.T) {
	e := newEnv(t, good())
	for _, c := range []struct {
		name   string
		header map[string]string
		pixel  bool
		query  string // the pixel's
		want   string // source id, or the failure reason
		label  string // source label of the failure
	}{
		{name: "no key", want: ReasonMissingKey, label: Unknown},
		{name: "unknown key", header: map[string]string{"X-Write-Key": "wk_nope_123"}, want: ReasonUnknownKey, label: Unknown},
		{name: "unknown basic", header: map[string]string{"Authorization": basic("wk_nope_123", "")}, want: ReasonUnknownKey, label: Unknown},
		{name: "basic with a password", header: map[string]string{"Authorization": basic("wk_shop_1", "x")}, want: ReasonMissingKey, label: Unknown},
		{name: "basic", header: map[string]string{"Authorization": basic("wk_shop_1", "")}, want: "shop-web"},
		{name: "x-write-key", header: map[string]string{"X-Write-Key": "wk_backend_1"}, want: "backend"},
		{name: "header key, listed origin", header: map[string]string{"X-Write-Key": "wk_shop_1", "Origin": "https://shop.example"}, want: "shop-web"},
		{name: "header key, wrong origin", header: map[string]string{"X-Write-Key": "wk_shop_1", "Origin": "https://evil.example"}, want: ReasonOrigin, label: "shop-web"},
		{name: "header key of a source without origins, any origin", header: map[string]string{"X-Write-Key": "wk_backend_1", "Origin": "https://evil.example"}, want: "backend"},
		{name: "pixel, no key", pixel: true, query: "e=x", header: map[string]string{"Origin": "https://shop.example"}, want: ReasonMissingKey, label: Unknown},
		{name: "k on /collect is not a key", query: "k=wk_shop_1", header: map[string]string{"Origin": "https://shop.example"}, want: ReasonMissingKey, label: Unknown},
		{name: "pixel key, Origin", pixel: true, query: "k=wk_shop_1", header: map[string]string{"Origin": "https://shop.example"}, want: "shop-web"},
		{name: "pixel key, Referer", pixel: true, query: "k=wk_shop_1", header: map[string]string{"Referer": "https://shop.example/cart?x=1"}, want: "shop-web"},
		{name: "pixel key, no origin", pixel: true, query: "k=wk_shop_1", want: ReasonOrigin, label: "shop-web"},
		{name: "pixel key, wrong Referer", pixel: true, query: "k=wk_shop_1", header: map[string]string{"Referer": "https://shop.example.evil/"}, want: ReasonOrigin, label: "shop-web"},
		{name: "pixel key of a source without origins", pixel: true, query: "k=wk_backend_1", header: map[string]string{"Origin": "https://shop.example"}, want: ReasonOrigin, label: "backend"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/px.gif?"+c.query, nil)
			for k, v := range c.header {
				r.Header.Set(k, v)
			}
			before := e.failures(c.label, c.want)
			src, err := e.auth.Check(r, c.pixel)
			var f *Failure
			switch {
			case errors.As(err, &f):
				if f.Reason != c.want {
					t.Fatalf("failure %s (%s), want %s", f.Reason, f.Msg, c.want)
				}
				if got := e.failures(c.label, c.want) - before; got != 1 {
					t.Errorf("failures{%s,%s} grew by %v, want 1", c.label, c.want, got)
				}
			case err != nil:
				t.Fatal(err)
			case src.ID != c.want:
				t.Fatalf("source %s, want %s", src.ID, c.want)
			}
		})
	}
}

func TestOpenMode(t *testing.T) {
	a, err := New(Options{Mode: ModeOpen}, prometheus.NewRegistry(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	src, err := a.Check(httptest.NewRequest("GET", "/px.gif?k=x", nil), true)
	if err != nil || src.ID != Anonymous {
		t.Fatalf("%v %v", src, err)
	}
}

// TestReload swaps in a good file and keeps the previous set over a bad
// one, logging and counting both.
func TestReload(t *testing.T) {
	e := newEnv(t, good())
	req := func(key string) *http.Request {
		r := httptest.NewRequest("POST", "/collect", nil)
		r.Header.Set("X-Write-Key", key)
		return r
	}
	os.WriteFile(e.path, []byte("sources:\n  - id: new-one\n    write_keys: [wk_new_key_1]\n"), 0o600)
	if err := e.auth.Reload(); err != nil {
		t.Fatal(err)
	}
	if src, err := e.auth.Check(req("wk_new_key_1"), false); err != nil || src.ID != "new-one" {
		t.Fatalf("after a good reload: %v %v", src, err)
	}
	if _, err := e.auth.Check(req("wk_shop_1"), false); err == nil {
		t.Fatal("a key of the old file still counts")
	}
	os.WriteFile(e.path, []byte("sources:\n  - id: BAD\n    write_keys: [wk_leaked_key]\n"), 0o600)
	if err := e.auth.Reload(); err == nil {
		t.Fatal("a bad file reloaded")
	}
	if src, err := e.auth.Check(req("wk_new_key_1"), false); err != nil || src.ID != "new-one" {
		t.Fatalf("a bad reload lost the previous set: %v %v", src, err)
	}
	ok := testutil.ToFloat64(e.auth.reloads.WithLabelValues("success"))
	bad := testutil.ToFloat64(e.auth.reloads.WithLabelValues("failure"))
	if ok != 1 || bad != 1 {
		t.Errorf("reloads success %v failure %v, want 1 and 1", ok, bad)
	}
	if !strings.Contains(e.log.String(), "id is invalid") || strings.Contains(e.log.String(), "wk_leaked_key") {
		t.Errorf("log should say why, without the key:\n%s", e.log)
	}
	os.Remove(e.path)
	if err := e.auth.Reload(); err == nil {
		t.Fatal("a missing file reloaded")
	}
}

func TestPixelKey(t *testing.T) {
	for q, want := range map[string]string{
		"":                      "",
		"k=wk_1":                "wk_1",
		"e=pageview&k=wk%5F1&x": "wk_1",
		"kk=x&k=":               "",
		"url=a%26k%3Dx":         "",
		"k=%zz":                 "",
	} {
		if got := PixelKey(q); got != want {
			t.Errorf("PixelKey(%q) = %q, want %q", q, got, want)
		}
	}
}

func TestParseRate(t *testing.T) {
	for v, want := range map[string]float64{"200/s": 200, "60/m": 1, "3600/h": 1, "0.5/s": 0.5} {
		if got, err := ParseRate(v); err != nil || got != want {
			t.Errorf("ParseRate(%s) = %v, %v", v, got, err)
		}
	}
	for _, v := range []string{"", "200", "-1/s", "1/d", "NaN/s", "2000000/s", "x/s"} {
		if _, err := ParseRate(v); err == nil {
			t.Errorf("ParseRate(%q) passed", v)
		}
	}
}

// TestOriginsAsBrowsersSendThem checks that an origin written with capitals
// or its scheme's default port still matches what a browser sends (the
// serialised origin: lower case, no default port), rather than being
// accepted at start and then never matching a single request.
func TestOriginsAsBrowsersSendThem(t *testing.T) {
	set, err := Parse([]byte(`
sources:
  - id: shop-web
    write_keys: ["wk_shop_1"]
    origins: ["HTTPS://Shop.Example", "https://www.shop.example:443", "http://shop.example:80", "http://shop.example:8080"]
`), noFiles)
	if err != nil {
		t.Fatal(err)
	}
	src := set.ByID("shop-web")
	for _, o := range []string{"https://shop.example", "https://www.shop.example", "http://shop.example", "http://shop.example:8080"} {
		if !src.AllowsOrigin(o) {
			t.Errorf("AllowsOrigin(%s) = false; origins %q", o, src.Origins)
		}
	}
	if !src.allowsReferer("https://shop.example/cart") {
		t.Errorf("allowsReferer(https://shop.example/cart) = false; origins %q", src.Origins)
	}
}
