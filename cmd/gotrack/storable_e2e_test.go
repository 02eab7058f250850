package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gotrack/gotrack/internal/pgtest"
)

// TestAcceptedMeansStorable is issue 11's invariant: every event counted in
// a 202's "accepted" (and every pixel event GoTrack keeps) is written by
// every configured sink, PostgreSQL included, without a dead letter. Its
// inputs are the JSON scanner's fuzz corpus (internal/event's
// testdata/fuzz), each entry sent as a /collect body, as the props of an
// event, as its strings, and as a pixel's parameters.
func TestAcceptedMeansStorable(t *testing.T) {
	table := pgtest.Table(t)
	p := startGotrack(t, "OUTPUTS=log,postgres", "PG_DSN="+pgtest.DSN(t), "PG_TABLE="+table)
	corpus := fuzzCorpus(t)

	accepted, rejected := 0, 0
	collect := func(body string) {
		t.Helper()
		resp, err := http.Post("http://"+p.ingest+"/collect", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var r struct {
			Error              string
			Accepted, Rejected int
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("POST %q: %d, body is not JSON: %q", body, resp.StatusCode, b)
		}
		switch resp.StatusCode {
		case http.StatusAccepted:
			accepted += r.Accepted
			rejected += r.Rejected
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			rejected++
			if r.Error == "" {
				t.Errorf("POST %q: %d without an error message", body, resp.StatusCode)
			}
		default:
			t.Fatalf("POST %q: %d %s", body, resp.StatusCode, b)
		}
	}
	pixels := 0
	pixel := func(query string) {
		t.Helper()
		code, _ := httpGet(t, "http://"+p.ingest+"/px.gif?"+query)
		if code != http.StatusOK {
			t.Fatalf("pixel %q: %d", query, code)
		}
		pixels++
	}

	for i, s := range corpus {
		str, _ := json.Marshal(s) // invalid UTF-8 becomes \ufffd, NUL \u0000
		events := []string{fmt.Sprintf(`{"type":"fuzz","title":%s,"url":%s,"props":{"k":%s,%s:[%s]}}`, str, str, str, str, str)}
		if json.Valid([]byte(s)) {
			collect(s) // the entry itself as a body: an event, an array of them, or junk
			events = append(events, `{"type":"fuzz","props":{"v":`+s+`}}`)
			if strings.HasPrefix(strings.TrimSpace(s), "{") {
				events = append(events, `{"type":"fuzz","props":`+s+`}`)
			}
		}
		for _, e := range events {
			collect(e)
		}
		collect("[" + strings.Join(events, ",") + "]")
		raw := url.QueryEscape(s)
		pixel(fmt.Sprintf("e=fuzz&eid=%s&title=%s&url=%s&p.k=%s&p.%s=1", pixelID(i), raw, raw, raw, raw))
		// The same with the bytes unescaped where a query allows it, so
		// that %-escapes in the entry reach the decoder as they are.
		if !strings.ContainsAny(s, "&#") && !strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
			pixel(fmt.Sprintf("e=fuzz&eid=%s&title=%s&p.k=%s", pixelID(len(corpus)+i), s, s))
		}
	}
	p.stop(t)

	inFile := readEvents(t, p.path("events.ndjson"))
	inTable := pgtest.IDs(t, table)
	if b, err := os.ReadFile(p.path("dead.ndjson")); err == nil && len(b) > 0 {
		t.Errorf("events were dead-lettered:\n%s", b)
	}
	if !maps.Equal(inFile, inTable) {
		t.Errorf("the NDJSON file holds %d events, the table %d; the sets differ", len(inFile), len(inTable))
	}
	fromCollect := 0
	for id := range inFile {
		if !strings.HasPrefix(id, pixelIDPrefix) {
			fromCollect++
		}
	}
	t.Logf("%d corpus entries: /collect accepted %d and rejected %d events; %d pixels sent, %d kept; file %d, table %d",
		len(corpus), accepted, rejected, pixels, len(inFile)-fromCollect, len(inFile), len(inTable))
	if fromCollect != accepted {
		t.Errorf("/collect answered 202 with %d events accepted in all; the sinks hold %d of them", accepted, fromCollect)
	}
	if accepted == 0 || rejected == 0 || len(inFile) == fromCollect {
		t.Errorf("the corpus exercised too little: %d accepted, %d rejected, %d pixels kept", accepted, rejected, len(inFile)-fromCollect)
	}
}

const pixelIDPrefix = "00000000-0000-7000-8000-"

// pixelID is a UUID that marks a pixel's event apart from /collect's.
func pixelID(i int) string { return fmt.Sprintf("%s%012d", pixelIDPrefix, i) }

// fuzzCorpus reads every string argument of the fuzz corpus entries of
// internal/event (testdata/fuzz/Fuzz*/*, "go test fuzz v1" files).
func fuzzCorpus(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../internal/event/testdata/fuzz/Fuzz*/*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fuzz corpus under internal/event/testdata/fuzz: %v", err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if lines[0] != "go test fuzz v1" {
			t.Fatalf("%s is not a fuzz corpus file", f)
		}
		for _, l := range lines[1:] {
			arg, ok := strings.CutPrefix(l, "string(")
			if !ok {
				continue
			}
			s, err := strconv.Unquote(strings.TrimSuffix(arg, ")"))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if strings.TrimSpace(s) != "" {
				out = append(out, s)
			}
		}
	}
	return out
}
