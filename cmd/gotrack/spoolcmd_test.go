package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
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
