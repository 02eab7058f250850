package spool

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// pidFile names the process holding the lock, for the message a second
// process prints. The lock itself is the flock on the directory, which the
// kernel releases when the holder exits, however it exits; a stale pidFile
// is harmless.
const pidFile = "lock.pid"

// ErrLocked is returned by Open, and by Verify, when another process holds
// the spool directory.
var ErrLocked = errors.New("in use by another process")

// lockDir takes a flock on dir: exclusive for a running spool, shared for
// an offline check. It fails at once, naming the holder's PID when known,
// rather than waiting: two GoTrack processes appending to one spool lose
// acknowledged events.
func lockDir(dir string, exclusive bool) (*os.File, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("spool: lock: %w", err)
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err = syscall.Flock(int(d.Fd()), how|syscall.LOCK_NB)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		d.Close()
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("spool: lock %s: %w", dir, err)
		}
		// lock.pid names the last GoTrack that held the lock; if that
		// process is gone, the holder now is another, such as a verify.
		holder := "PID unknown; gotrack spool verify, perhaps"
		if b, rerr := os.ReadFile(filepath.Join(dir, pidFile)); rerr == nil {
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 && syscall.Kill(pid, 0) != syscall.ESRCH {
				holder = "PID " + strconv.Itoa(pid)
			}
		}
		advice := "two processes on one spool lose events, so stop the other one or give each its own SPOOL_DIR"
		if !exclusive {
			advice = "stop GoTrack before checking its spool"
		}
		return nil, fmt.Errorf("spool: SPOOL_DIR %s is %w (%s): %s", dir, ErrLocked, holder, advice)
	}
	if exclusive {
		// Best effort: the lock does not depend on it.
		_ = os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o640)
	}
	return d, nil
}
