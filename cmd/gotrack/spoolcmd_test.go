package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
	"github.com/gotrack/gotrack/internal/spool"
	"github.com/gotrack/gotrack/internal/testkit"
)

// TestSpoolLockAndVerify runs the real binary: a second gotrack on a
// running one's SPOOL_DIR refuses to start, naming the directory and the
// PID; `gotrack spool verify` refuses a running spool, passes a sound one
// and exits non-zero on a damaged one.
func TestSpoolLockAndVerify(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	first := startGotrackIn(t, dir, "SPOOL_DIR="+spoolDir)

	second := exec.Command(binPath)
	second.Env = []string{"PATH=" + os.Getenv("PATH"), "SERVER_ADDR=127.0.0.1:0", "SPOOL_DIR=" + spoolDir,
		"LOG_PATH=" + filepath.Join(dir, "second.ndjson"), "DEAD_LETTER_PATH=" + filepath.Join(dir, "second-dead.ndjson")}
	out, err := second.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), spoolDir+" is in use by another process (PID "+strconv.Itoa(first.cmd.Process.Pid)+")") {
		t.Fatalf("second gotrack on the same SPOOL_DIR: %v\n%s\nwant a refusal naming %s and PID %d", err, out, spoolDir, first.cmd.Process.Pid)
	}

	verify := func() (string, error) {
		out, err := exec.Command(binPath, "spool", "verify", spoolDir).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(); err == nil || !strings.Contains(out, "stop GoTrack") {
		t.Errorf("verify on a running spool: %v\n%s", err, out)
	}
	first.stop(t)
	if out, err := verify(); err != nil || !strings.Contains(out, "no damage found") {
		t.Fatalf("verify on a sound spool: %v\n%s", err, out)
	}

	segs, _ := filepath.Glob(filepath.Join(spoolDir, "seg-*.log"))
	f, err := os.OpenFile(segs[len(segs)-1], os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte{0x40, 0, 0, 0, 1, 2}) // a torn record
	f.Close()
	got, err := verify()
	if !errors.As(err, &exit) || exit.ExitCode() == 0 || !strings.Contains(got, "PROBLEM: ") {
		t.Fatalf("verify on a damaged spool: %v\n%s", err, got)
	}
	t.Logf("gotrack spool verify on a damaged spool:\n%s", got)
}

// TestSpoolDamageEndToEnd is issue 11's case through the real binary: a
// spool whose closed segment of 1,960 events has one bit flipped at 25%.
// `gotrack spool verify` reports the damage and exits 1; gotrack starts,
// logs the damage at ERROR, and delivers the 1,959 other events; afterwards
// the spool verifies clean.
func TestSpoolDamageEndToEnd(t *testing.T) {
	dir := t.TempDir()
	spoolDir := filepath.Join(dir, "spool")
	events := sinktest.Events(1960)
	opts := spool.Options{Dir: spoolDir, Sync: spool.Sync{Always: true}, MaxBytes: 1 << 30, SegmentBytes: 1 << 30, Readers: []string{"log"}}
	sp, err := spool.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(events); i += 20 {
		if err := sp.Append(events[i : i+20]); err != nil {
			t.Fatal(err)
		}
	}
	sp.Close()
	seg := filepath.Join(spoolDir, "seg-00000000000000000000.log")
	b, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	if sp, err = spool.Open(opts); err != nil { // starts the next segment, so seg-0 is closed
		t.Fatal(err)
	}
	sp.Close()
	b[len(b)/4] ^= 1 << 5
	os.WriteFile(seg, b, 0o640)

	out, err := exec.Command(binPath, "spool", "verify", spoolDir).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), "1 record lost") || !strings.Contains(string(out), "sink log: cursor 0, lag 1960 events") {
		t.Fatalf("verify before the start: %v\n%s", err, out)
	}

	p := startGotrackIn(t, dir, "SPOOL_DIR="+spoolDir)
	lines := func() []string {
		b, _ := os.ReadFile(p.path("events.ndjson"))
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	testkit.Eventually(t, "1,959 events in the file", func() bool { return len(lines()) >= 1959 })
	p.stop(t)
	if got := lines(); len(got) != 1959 || !strings.Contains(got[0], events[0].EventID) || !strings.Contains(got[1958], events[1959].EventID) {
		t.Errorf("%d events delivered, want the 1,959 undamaged ones in order", len(got))
	}
	if logs := p.stderr.String(); !strings.Contains(logs, `"level":"ERROR","msg":"spool: skipped damaged records in a segment`) {
		t.Errorf("no ERROR line naming the damage:\n%s", logs)
	}
	if out, err := exec.Command(binPath, "spool", "verify", spoolDir).CombinedOutput(); err != nil || !strings.Contains(string(out), "no damage found") {
		t.Errorf("verify after the repair: %v\n%s", err, out)
	}
}
