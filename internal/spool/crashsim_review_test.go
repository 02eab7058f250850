package spool

// A power-loss simulator for the preallocated spool (review of issue 16).
// Not run by default: see internal/spool/testdata/crashsim/README.md.
//
// TestCrashsimWorkload runs appends on a spool whose directory lies on a
// file system (ext4, xfs, btrfs) in a loop device backed by the crashsim
// FUSE daemon, which logs every block write and every flush in order, and
// writes a marker to the daemon after each append returns. The daemon's log
// then tells, for a power loss at any moment, what the disk holds: every
// write up to the last flush, and any subset of the writes after it.
// TestCrashsimCheck rebuilds such images (at each flush, with none, all,
// and random halves of the 4 KiB blocks written since), mounts each one,
// opens the spool on it, and checks that every append answered before the
// power loss is there.

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/gotrack/gotrack/internal/sink/sinktest"
)

func TestCrashsimWorkload(t *testing.T) {
	dir, ctl := os.Getenv("CRASHSIM_DIR"), os.Getenv("CRASHSIM_CTL")
	if dir == "" || ctl == "" {
		t.Skip("CRASHSIM_DIR and CRASHSIM_CTL not set")
	}
	mark := func(s string) {
		if err := os.WriteFile(ctl, []byte(s), 0); err != nil {
			t.Fatal(err)
		}
	}
	n, _ := strconv.Atoi(os.Getenv("CRASHSIM_EVENTS"))
	if n == 0 {
		n = 3000
	}
	events := sinktest.Events(n)
	var idlist bytes.Buffer
	for _, e := range events {
		idlist.WriteString(e.EventID + "\n")
	}
	if err := os.WriteFile(os.Getenv("CRASHSIM_IDS"), idlist.Bytes(), 0o640); err != nil {
		t.Fatal(err)
	}
	mode := Sync{Always: true}
	if os.Getenv("CRASHSIM_MODE") == "interval" {
		mode = Sync{Interval: 50e6}
	}
	mark("start")
	s, err := Open(Options{Dir: dir, Sync: mode, MaxBytes: 4 << 20, Readers: []string{"log"}})
	if err != nil {
		t.Fatal(err)
	}
	mark("opened")
	sizes := []int{1, 3, 10, 1, 40, 2, 1, 5, 20, 200}
	acked := 0
	for i := 0; acked < n; i++ {
		k := min(sizes[i%len(sizes)], n-acked)
		if err := s.Append(events[acked : acked+k]); err != nil {
			t.Fatal(err)
		}
		acked += k
		mark(fmt.Sprintf("acked %d", acked))
		if mode.Interval > 0 {
			time.Sleep(5 * time.Millisecond) // let the interval sync run during the load
		}
	}
	// killed: no Close
}

type simEntry struct {
	kind byte
	off  int64
	data []byte
}

func readSimLog(t *testing.T, path string) (int64, []simEntry) {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 1<<20)
	var size int64
	binary.Read(r, binary.LittleEndian, &size)
	var out []simEntry
	for {
		kind, err := r.ReadByte()
		if err == io.EOF {
			break
		}
		var off int64
		var n int32
		binary.Read(r, binary.LittleEndian, &off)
		binary.Read(r, binary.LittleEndian, &n)
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			t.Fatal(err)
		}
		out = append(out, simEntry{kind, off, data})
	}
	return size, out
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestCrashsimCheck(t *testing.T) {
	logPath, idsPath := os.Getenv("CRASHSIM_LOG"), os.Getenv("CRASHSIM_IDS")
	if logPath == "" {
		t.Skip("CRASHSIM_LOG not set")
	}
	size, entries := readSimLog(t, logPath)
	b, _ := os.ReadFile(idsPath)
	ids := strings.Fields(string(b))
	sub := os.Getenv("CRASHSIM_SUBDIR") // the spool's directory inside the file system
	every, _ := strconv.Atoi(os.Getenv("CRASHSIM_EVERY"))
	every = max(every, 1)
	work := t.TempDir()
	imgPath, mnt := filepath.Join(work, "img"), filepath.Join(work, "mnt")
	os.Mkdir(mnt, 0o755)
	img := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))

	start := -1
	for i, e := range entries {
		if e.kind == 'M' && string(e.data) == "start" {
			start = i
		}
	}
	if start < 0 {
		t.Fatal("no start marker")
	}
	for _, e := range entries[:start] {
		if e.kind == 'W' {
			copy(img[e.off:], e.data)
		}
	}
	var (
		states, fails                  int
		truncs, corrupt, zeroCutStates int
		corruptStates                  = map[bool]int{} // by whether the state has a random half of the pending blocks
		silent, silentEvents           int              // interval mode: states that lost answered events without counting any
		interval                       = os.Getenv("CRASHSIM_MODE") == "interval"
	)
	check := func(state []byte, acked int, what string) {
		states++
		if err := os.WriteFile(imgPath, state, 0o600); err != nil {
			t.Fatal(err)
		}
		loop := run(t, "losetup", "-f", "--show", imgPath)
		defer run(t, "losetup", "-d", loop)
		if out, err := exec.Command("mount", loop, mnt).CombinedOutput(); err != nil {
			t.Errorf("%s: mount: %v %s", what, err, out)
			fails++
			return
		}
		defer run(t, "umount", mnt)
		dir := filepath.Join(mnt, sub)
		logs := &logCount{}
		m, _ := NewMetrics(prometheus.NewRegistry(), []string{"log"})
		s, err := Open(Options{Dir: dir, Sync: Sync{Always: true}, MaxBytes: 4 << 20, Readers: []string{"log"}, Metrics: m, Log: slog.New(logs)})
		if err != nil {
			if acked > 0 {
				t.Errorf("%s: acked %d, spool does not open: %v", what, acked, err)
				fails++
			}
			return
		}
		defer s.Close()
		r := s.Reader("log")
		got := drain(t, s, "log")
		if testutil.ToFloat64(m.corrupt) > 0 {
			corruptStates[strings.Contains(what, "random")]++
		}
		truncs += int(testutil.ToFloat64(m.truncations))
		corrupt += int(testutil.ToFloat64(m.corrupt))
		logs.mu.Lock()
		if strings.Contains(logs.lines.String(), "cut the preallocated space") {
			zeroCutStates++
		}
		if testutil.ToFloat64(m.corrupt) > 0 && os.Getenv("CRASHSIM_VERBOSE") != "" {
			t.Logf("%s: corrupt %v:\n%s", what, testutil.ToFloat64(m.corrupt), logs.lines.String())
		}
		logs.mu.Unlock()
		_ = r
		if len(got) < acked && interval {
			// 2xx before the sync: losing the window is allowed, silently is not.
			counted := testutil.ToFloat64(m.truncations) + testutil.ToFloat64(m.corrupt)
			if counted == 0 {
				silent++
				silentEvents += acked - len(got)
			}
			return
		}
		if len(got) < acked {
			t.Errorf("%s: %d events acked, %d recovered", what, acked, len(got))
			fails++
			return
		}
		for i := range acked {
			if got[i].EventID != ids[i] {
				t.Errorf("%s: event %d is %s, want %s", what, i, got[i].EventID, ids[i])
				fails++
				return
			}
		}
	}
	acked := 0
	flushes := 0
	i := start + 1
	for i < len(entries) {
		// entries[i:j] run to the next flush (exclusive); markers there are acked by flushes before.
		j := i
		var pending []simEntry
		ackedHere := acked
		for j < len(entries) && entries[j].kind != 'F' {
			switch entries[j].kind {
			case 'W':
				pending = append(pending, entries[j])
			case 'M':
				if v, ok := strings.CutPrefix(string(entries[j].data), "acked "); ok {
					ackedHere, _ = strconv.Atoi(v)
				}
			}
			j++
		}
		if flushes%every == 0 {
			what := fmt.Sprintf("flush %d (entry %d), %d writes pending", flushes, i, len(pending))
			check(img, ackedHere, what+", none persisted")
			if len(pending) > 0 {
				for trial := range 2 {
					st := bytes.Clone(img)
					for _, w := range pending {
						for o := 0; o < len(w.data); o += 4096 {
							if rng.IntN(2) == 0 {
								copy(st[w.off+int64(o):], w.data[o:min(len(w.data), o+4096)])
							}
						}
					}
					check(st, ackedHere, fmt.Sprintf("%s, random half of the blocks #%d", what, trial))
				}
			}
		}
		for _, w := range pending {
			copy(img[w.off:], w.data)
		}
		acked = ackedHere
		flushes++
		i = j + 1
	}
	check(img, acked, "end, everything persisted")
	t.Logf("%d flushes, %d crash states checked, %d failed; recoveries counted %d truncations and %d corrupt records in all (corrupt records in %d states at a flush, %d with random blocks pending); %d states cut preallocated zeros",
		flushes, states, fails, truncs, corrupt, corruptStates[false], corruptStates[true], zeroCutStates)
	if interval {
		t.Logf("interval: %d states lost events answered 2xx (%d in all) with no truncation or corrupt record counted", silent, silentEvents)
	}
}
