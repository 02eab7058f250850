package spool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestLockHelperProcess is not a test: TestLockAcrossProcesses runs the
// test binary again with it, as the second process. It opens the spool in
// $SPOOL_LOCK_DIR, says "locked", and on "close" on its stdin closes the
// spool and says "closed"; it exits when its stdin ends.
func TestLockHelperProcess(t *testing.T) {
	dir := os.Getenv("SPOOL_LOCK_DIR")
	if dir == "" {
		t.Skip("helper process for TestLockAcrossProcesses")
	}
	s, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, Readers: []string{"log"}, Sync: Sync{Always: true}})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println("locked")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() == "close" {
			s.Close()
			fmt.Println("closed")
		}
	}
	os.Exit(0)
}

type helper struct {
	cmd *exec.Cmd
	in  *os.File
	out *bufio.Scanner
}

func startHelper(t *testing.T, dir string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), "SPOOL_LOCK_DIR="+dir)
	inR, inW, _ := os.Pipe()
	cmd.Stdin = inR
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	inR.Close()
	h := &helper{cmd: cmd, in: inW, out: bufio.NewScanner(out)}
	t.Cleanup(func() {
		inW.Close()
		cmd.Process.Kill()
		cmd.Wait()
	})
	h.expect(t, "locked")
	return h
}

func (h *helper) expect(t *testing.T, want string) {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		if h.out.Scan() {
			got <- h.out.Text()
		}
		close(got)
	}()
	select {
	case line := <-got:
		if line != want {
			t.Fatalf("helper process said %q, want %q", line, want)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("helper process did not say %q", want)
	}
}

// TestLockAcrossProcesses runs two real processes on one spool directory:
// the second refuses to open it, naming the directory and the holder's PID;
// the lock goes when the holder closes the spool, and when it is killed
// with SIGKILL.
func TestLockAcrossProcesses(t *testing.T) {
	dir := t.TempDir()
	h := startHelper(t, dir)
	pid := strconv.Itoa(h.cmd.Process.Pid)

	_, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, Readers: []string{"log"}, Sync: Sync{Always: true}})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "PID "+pid) {
		t.Fatalf("second process: Open = %v; want ErrLocked naming %s and PID %s", err, dir, pid)
	}
	t.Log(err)
	if _, err := Verify(dir); !errors.Is(err, ErrLocked) {
		t.Errorf("Verify on a running spool: %v, want ErrLocked", err)
	}

	fmt.Fprintln(h.in, "close")
	h.expect(t, "closed")
	s := open(t, dir, Options{})
	s.Close()

	h = startHelper(t, dir) // takes it again: Close released it here too
	if err := h.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.cmd.Wait()
	s = open(t, dir, Options{}) // the kernel released the killed holder's lock
	s.Close()

	// lock.pid still names the killed process; a shared holder (a verify)
	// must not be reported as that dead PID.
	dead := strconv.Itoa(h.cmd.Process.Pid)
	os.WriteFile(filepath.Join(dir, pidFile), []byte(dead+"\n"), 0o640)
	shared, err := lockDir(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	defer shared.Close()
	_, err = Open(Options{Dir: dir, MaxBytes: 1 << 20, Readers: []string{"log"}, Sync: Sync{Always: true}})
	if !errors.Is(err, ErrLocked) || strings.Contains(err.Error(), "PID "+dead) {
		t.Errorf("Open while a verify holds the lock: %v; want ErrLocked without the dead PID %s", err, dead)
	}
	t.Log(err)
}

// TestLockInProcess: a flock is per open file, so a second Open in one
// process is refused as well, and Close releases the lock.
func TestLockInProcess(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if _, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, Sync: Sync{Always: true}}); !errors.Is(err, ErrLocked) {
		t.Fatalf("second Open: %v, want ErrLocked", err)
	}
	s.Close()
	open(t, dir, Options{}).Close()
}
