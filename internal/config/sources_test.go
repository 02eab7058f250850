package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSourcesProblems checks that SOURCES_FILE's problems (bad content, a
// duplicate id or key, an unreadable secret file, an invalid rate) are
// listed with every other problem of the configuration, one each.
func TestSourcesProblems(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sources.yaml")
	os.WriteFile(path, []byte(`
sources:
  - id: a
    write_keys: [wk_dup_key_1]
    rate: fast
  - id: a
    write_keys: [wk_dup_key_1]
    signing_secret_file: `+filepath.Join(dir, "nope")+`
`), 0o600)
	_, err := Load(env("AUTH_MODE", "key", "SOURCES_FILE", path, "QUEUE_SIZE", "ten"))
	var ce *Error
	if !errors.As(err, &ce) {
		t.Fatalf("Load = %v", err)
	}
	for _, want := range []string{"QUEUE_SIZE", "rate \"fast\"", "duplicate id", "a write key is also a key", "signing_secret_file: open"} {
		n := 0
		for _, p := range ce.Problems {
			if strings.Contains(p.Error(), want) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d problems name %q, want 1:\n%v", n, want, err)
		}
	}
	n := 0
	for _, p := range ce.Problems {
		if strings.HasPrefix(p.Error(), "SOURCES_FILE=") {
			n++
		}
	}
	if n != 4 {
		t.Errorf("%d problems of SOURCES_FILE, want 4, one per problem:\n%v", n, err)
	}
	if strings.Contains(err.Error(), "wk_dup_key_1") {
		t.Errorf("a key is quoted:\n%v", err)
	}

	os.WriteFile(path, []byte("sources: [{id: a, write_keys: [wk_a_123456], colour: red}]\n"), 0o600)
	if _, err := Load(env("AUTH_MODE", "key", "SOURCES_FILE", path)); err == nil || !strings.Contains(err.Error(), "colour") {
		t.Errorf("an unknown field passed: %v", err)
	}
	if _, err := Load(env("AUTH_MODE", "key")); err == nil || !strings.Contains(err.Error(), "AUTH_MODE=key needs SOURCES_FILE") {
		t.Errorf("AUTH_MODE=key without a file: %v", err)
	}
	if _, err := Load(env("SOURCES_FILE", path)); err == nil || !strings.Contains(err.Error(), "AUTH_MODE is not key") {
		t.Errorf("SOURCES_FILE under AUTH_MODE=open: %v", err)
	}
	if _, err := Load(env("AUTH_MODE", "sometimes")); err == nil {
		t.Error("AUTH_MODE=sometimes passed")
	}
	os.WriteFile(path, []byte("sources: [{id: a, write_keys: [wk_a_123456], rate: 5/s}]\n"), 0o600)
	c, err := Load(env("AUTH_MODE", "key", "SOURCES_FILE", path))
	if err != nil {
		t.Fatal(err)
	}
	if c.Sources.Set == nil || c.Sources.Set.ByID("a").Rate != 5 {
		t.Errorf("sources not loaded: %+v", c.Sources)
	}
}

func TestRateLimitPerIP(t *testing.T) {
	c, err := Load(env("RATE_LIMIT_PER_IP", "50/s"))
	if err != nil {
		t.Fatal(err)
	}
	if b := c.Sources.RateLimitPerIP; b.Rate != 50 || b.Burst != 100 {
		t.Errorf("RATE_LIMIT_PER_IP=50/s gave %+v, want rate 50 burst 100", b)
	}
	if c, _ := Load(env()); c.Sources.RateLimitPerIP.Rate != 0 {
		t.Error("RATE_LIMIT_PER_IP is on by default")
	}
	_, err = Load(env("RATE_LIMIT_PER_IP", "lots", "QUEUE_SIZE", "ten"))
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 || !strings.Contains(err.Error(), "RATE_LIMIT_PER_IP") {
		t.Errorf("an invalid RATE_LIMIT_PER_IP, with another problem: %v", err)
	}
}

func TestEnrichSettings(t *testing.T) {
	c, err := Load(env())
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Enrich; !e.UA || !e.Bot || !e.Campaign || e.BotPolicy != "flag" || e.GeoIPDB != "" {
		t.Errorf("defaults: %+v", e)
	}
	if c, _ := Load(env("ENRICH", "none")); c.Enrich.UA || c.Enrich.Bot || c.Enrich.Campaign {
		t.Errorf("ENRICH=none: %+v", c.Enrich)
	}
	if c, _ := Load(env("ENRICH", "campaign")); c.Enrich.UA || c.Enrich.Bot || !c.Enrich.Campaign {
		t.Errorf("ENRICH=campaign: %+v", c.Enrich)
	}
	_, err = Load(env("ENRICH", "ua,geo", "BOT_POLICY", "block", "GEOIP_DB", "/nonexistent/city.mmdb"))
	var ce *Error
	if !errors.As(err, &ce) || len(ce.Problems) != 3 {
		t.Fatalf("want 3 problems: %v", err)
	}
	for _, want := range []string{"ENRICH=", "unknown parts geo", "BOT_POLICY=", "GEOIP_DB"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("no %q in %v", want, err)
		}
	}
	if _, err := Load(env("ENRICH", "ua", "BOT_POLICY", "drop")); err == nil || !strings.Contains(err.Error(), "BOT_POLICY=drop needs bot") {
		t.Errorf("BOT_POLICY=drop without bot: %v", err)
	}
}
