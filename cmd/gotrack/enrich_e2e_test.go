package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/maxmind/mmdbwriter/mmdbtype"

	"github.com/gotrack/gotrack/internal/enrich/enrichtest"
	"github.com/gotrack/gotrack/internal/testkit"
)

// TestEnrichE2E runs gotrack with GEOIP_DB and the default enrichment,
// checks the stored events against the schema, and reloads the database on
// SIGHUP.
func TestEnrichE2E(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "city.mmdb")
	enrichtest.WriteDB(t, db, "GeoLite2-City", map[string]mmdbtype.Map{"127.0.0.0/8": enrichtest.City("DE", "", "Berlin")})
	p := startGotrackIn(t, dir, "GEOIP_DB="+db, "FLUSH_INTERVAL=5ms", "IP_MODE=hash", "IP_HASH_SECRET=0123456789abcdef0123")
	hit := func(ua string) {
		r, _ := http.NewRequest("GET", "http://"+p.ingest+"/px.gif?url=https%3A%2F%2Fshop.example%2F%3Futm_source%3Dnews", nil)
		r.Header.Set("User-Agent", ua)
		resp, err := http.DefaultClient.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	hit("curl/8.5.0")
	enrichtest.WriteDB(t, db, "GeoLite2-City", map[string]mmdbtype.Map{"127.0.0.0/8": enrichtest.City("DE", "", "Paris")})
	p.signal(t, syscall.SIGHUP)
	testkit.Eventually(t, "the reload", func() bool { return strings.Contains(p.stderr.String(), "geoip database reloaded") })
	hit("python-requests/2.32.3")
	p.stop(t)
	if n := len(readEvents(t, p.path("events.ndjson"))); n != 2 { // readEvents checks the schema
		t.Fatalf("%d events", n)
	}
	b, _ := os.ReadFile(p.path("events.ndjson"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	for i, want := range []string{`"geo":{"country":"DE","city":"Berlin"}`, `"geo":{"country":"DE","city":"Paris"}`} {
		if !strings.Contains(lines[i], want) || !strings.Contains(lines[i], `"bot":{"is_bot":true,"reasons":["automation"]}`) ||
			!strings.Contains(lines[i], `"campaign":{"utm_source":"news"}`) || strings.Contains(lines[i], "127.0.0.1") {
			t.Errorf("event %d:\n%s", i, lines[i])
		}
	}
}
