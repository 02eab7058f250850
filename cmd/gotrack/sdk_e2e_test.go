package main

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/gotrack/gotrack/internal/testkit"
)

// jsDir holds the pinned npm clients the tests run (test/js/package.json);
// scripts/test.sh installs them with npm ci.
const jsDir = "../../test/js"

// requireNodeModules finds node and the npm packages installed in jsDir.
// Like requireTool, a missing piece skips the test outside CI and fails it
// under scripts/test.sh (GOTRACK_TEST_STRICT) or in CI.
func requireNodeModules(t *testing.T, pkgs ...string) string {
	t.Helper()
	node := requireTool(t, "node")
	for _, p := range pkgs {
		if _, err := os.Stat(filepath.Join(jsDir, "node_modules", p, "package.json")); err != nil {
			msg := "npm package " + p + " is not installed in test/js (scripts/test.sh runs npm ci there)"
			if testkit.Strict() {
				t.Fatal(msg)
			}
			t.Skip(msg + "; skipping outside CI")
		}
	}
	return node
}

// sdkReport is what test/js/sdk-send.mjs prints.
type sdkReport struct {
	Sent []struct {
		Call string         `json:"call"`
		Seq  string         `json:"seq"`
		Msg  map[string]any `json:"msg"`
	} `json:"sent"`
	Errors []string `json:"errors"`
}

// TestNodeSDKsEveryCallOnce sends 1,000 mixed calls through each of
// Segment's and RudderStack's Node SDKs, installed from npm, to the built
// binary, and finds every call in the NDJSON output exactly once with its
// properties. The events go through the durable spool.
func TestNodeSDKsEveryCallOnce(t *testing.T) {
	node := requireNodeModules(t, "@segment/analytics-node", "@rudderstack/rudder-sdk-node")
	// Through the durable spool, as every accepted event would be with it on.
	dir := t.TempDir()
	p := startGotrackIn(t, dir, "IP_MODE=truncate", "SPOOL_DIR="+filepath.Join(dir, "spool"))
	const n = 1000
	var reports []sdkReport
	for _, sdk := range []string{"segment", "rudder"} {
		cmd := exec.Command(node, "sdk-send.mjs", sdk, "http://"+p.ingest, "wk_"+sdk+"_test", "1000")
		cmd.Dir = jsDir
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s SDK: %v", sdk, err)
		}
		var r sdkReport
		if err := json.Unmarshal(out, &r); err != nil {
			t.Fatalf("%s SDK report: %v: %.300s", sdk, err, out)
		}
		if len(r.Errors) > 0 || len(r.Sent) != n {
			t.Fatalf("%s SDK sent %d calls, errors: %v", sdk, len(r.Sent), r.Errors)
		}
		reports = append(reports, r)
	}

	var stored map[string][]map[string]any
	testkit.Eventually(t, "every call in the NDJSON file", func() bool {
		stored = storedBySeq(t, p.path("events.ndjson"))
		return len(stored) >= 2*n
	})
	p.stop(t)
	if files, _ := os.ReadDir(filepath.Join(dir, "spool")); len(files) == 0 {
		t.Error("the spool directory is empty: the events did not go through it")
	}
	readEvents(t, p.path("events.ndjson")) // every line passes the event schema
	stored = storedBySeq(t, p.path("events.ndjson"))

	for _, r := range reports {
		for _, s := range r.Sent {
			evs := stored[s.Seq]
			if len(evs) != 1 {
				t.Fatalf("call %s (%s) is stored %d times", s.Seq, s.Call, len(evs))
			}
			e := evs[0]
			if e["call"] != s.Call || e["source"] != "segment" {
				t.Fatalf("call %s stored as call=%v source=%v", s.Seq, e["call"], e["source"])
			}
			switch s.Call {
			case "track":
				checkProps(t, s.Seq, e, s.Msg["properties"], s.Msg["event"])
			case "page":
				want := s.Msg["properties"].(map[string]any)
				url := want["url"].(string)
				want["url"] = url[:strings.Index(url, "?")] + "?" + url[strings.Index(url, "&")+1:] // token= removed
				checkProps(t, s.Seq, e, want, s.Msg["name"])
				if e["url"] != want["url"] || e["visitor_id"] != s.Msg["anonymousId"] {
					t.Fatalf("page %s: url %v visitor_id %v", s.Seq, e["url"], e["visitor_id"])
				}
			case "identify":
				checkProps(t, s.Seq, e, s.Msg["traits"], nil)
			case "group":
				checkProps(t, s.Seq, e, s.Msg["traits"], nil)
				if seg := segmentExtra(e); seg["groupId"] != s.Msg["groupId"] {
					t.Fatalf("group %s: groupId %v", s.Seq, seg["groupId"])
				}
			}
			if uid, ok := s.Msg["userId"]; ok && e["user_id"] != uid {
				t.Fatalf("call %s: user_id %v, want %v", s.Seq, e["user_id"], uid)
			}
		}
	}
}

// TestNodeSDKsUnderRoutePrefix points both SDKs at a GoTrack under
// ROUTE_PREFIX with the settings the README gives.
func TestNodeSDKsUnderRoutePrefix(t *testing.T) {
	node := requireNodeModules(t, "@segment/analytics-node", "@rudderstack/rudder-sdk-node")
	p := startGotrack(t, "ROUTE_PREFIX=/t")
	for _, sdk := range []string{"segment", "rudder"} {
		cmd := exec.Command(node, "sdk-send.mjs", sdk, "http://"+p.ingest, "wk_"+sdk, "10", "/t")
		cmd.Dir = jsDir
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		var r sdkReport
		if err != nil || json.Unmarshal(out, &r) != nil || len(r.Errors) > 0 {
			t.Fatalf("%s SDK: %v %.300s", sdk, err, out)
		}
	}
	testkit.Eventually(t, "20 events", func() bool { return len(storedBySeq(t, p.path("events.ndjson"))) >= 20 })
	p.stop(t)
	if n := len(storedBySeq(t, p.path("events.ndjson"))); n != 20 {
		t.Errorf("%d calls stored, want 20", n)
	}
}

func checkProps(t *testing.T, seq string, e map[string]any, want, name any) {
	t.Helper()
	if !reflect.DeepEqual(e["props"], want) {
		t.Fatalf("call %s: props %v, want %v", seq, e["props"], want)
	}
	if name != nil && e["name"] != name {
		t.Fatalf("call %s: name %v, want %v", seq, e["name"], name)
	}
}

func segmentExtra(e map[string]any) map[string]any {
	ctx, _ := e["context"].(map[string]any)
	seg, _ := ctx["_segment"].(map[string]any)
	return seg
}

// storedBySeq reads the NDJSON file and groups the events by the seq tag
// the senders put in props (or, for an alias, in previousId).
func storedBySeq(t *testing.T, path string) map[string][]map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string][]map[string]any{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			continue // a line being written
		}
		seq := ""
		if props, ok := e["props"].(map[string]any); ok {
			seq, _ = props["seq"].(string)
		}
		if seq == "" {
			seq, _ = segmentExtra(e)["previousId"].(string)
		}
		if seq != "" {
			out[seq] = append(out[seq], e)
		}
	}
	return out
}
