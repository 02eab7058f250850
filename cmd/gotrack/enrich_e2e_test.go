package main

import (
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

func writeCityDB(t *testing.T, path, cityName string) {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{DatabaseType: "GeoLite2-City", RecordSize: 24, IncludeReservedNetworks: true})
	if err != nil {
		t.Fatal(err)
	}
	_, n, _ := net.ParseCIDR("127.0.0.0/8")
	if err := tree.Insert(n, mmdbtype.Map{"country": mmdbtype.Map{"iso_code": mmdbtype.String("DE")},
		"city": mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(cityName)}}}); err != nil {
		t.Fatal(err)
	}
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestEnrichE2E runs gotrack with GEOIP_DB and the default enrichment,
// checks the stored events against the schema, and reloads the database on
// SIGHUP.
func TestEnrichE2E(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "city.mmdb")
	writeCityDB(t, db, "Berlin")
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
	writeCityDB(t, db, "Paris")
	p.signal(t, syscall.SIGHUP)
	waitFor(t, "the reload", func() bool { return strings.Contains(p.stderr.String(), "geoip database reloaded") })
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
