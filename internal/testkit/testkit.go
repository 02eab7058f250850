// Package testkit holds the helpers GoTrack's tests share: waiting for a
// condition, and finding the real tools (promtool, prometheus) the tests
// run against.
package testkit

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

// Patience is how long Eventually waits before it gives up: long, since it
// only bounds a test that would otherwise hang, and the machines that run
// the tests may be busy.
const Patience = 30 * time.Second

// Eventually polls cond every 5ms until it is true, and fails the test with
// "timed out waiting for WHAT" when Patience passes first. It never asserts
// on how long the wait took.
func Eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if !Wait(Patience, cond) {
		t.Fatalf("timed out after %v waiting for %s", Patience, what)
	}
}

// Wait polls cond every 5ms until it is true, and reports whether it was
// before patience passed. It is for the waits that say more than
// Eventually when they give up (what a webhook did receive, say), or that
// need a patience of their own; cond may itself block, as a Kafka fetch
// does.
func Wait(patience time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

// Strict reports whether missing test tools and servers fail the tests
// rather than skip them: under scripts/test.sh (GOTRACK_TEST_STRICT set),
// which installs them, and in CI (CI set).
func Strict() bool { return os.Getenv("CI") != "" || os.Getenv("GOTRACK_TEST_STRICT") != "" }

// RequireTool returns the path of the named program. When it is missing it
// skips the test, or fails it when Strict.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err == nil {
		return p
	}
	if Strict() {
		t.Fatalf("%s is not installed; scripts/test.sh installs it", name)
	}
	t.Skipf("%s is not installed (run scripts/test.sh, which installs it); skipping outside CI", name)
	return ""
}
