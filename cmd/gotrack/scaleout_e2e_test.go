package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/gotrack/gotrack/internal/event"
	"github.com/gotrack/gotrack/internal/testkit"
)

// startKfake builds testdata/kfake and runs it as a process of its own: a
// Kafka cluster that outlives the GoTrack processes producing to it. It
// returns the brokers' addresses.
func startKfake(t *testing.T, partitions int, produceDelay time.Duration) []string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "kfake")
	if out, err := exec.Command("go", "build", "-o", bin, "./testdata/kfake").CombinedOutput(); err != nil {
		t.Fatalf("build kfake: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "-brokers", "3", "-partitions", fmt.Sprint(partitions), "-produce-delay", produceDelay.String())
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("kfake logs:\n%s", logs.String())
		}
	})
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			line <- sc.Text()
		}
		io.Copy(io.Discard, stdout)
	}()
	select {
	case l := <-line:
		addrs, ok := strings.CutPrefix(l, "brokers ")
		if !ok {
			t.Fatalf("kfake said %q", l)
		}
		return strings.Split(addrs, ",")
	case <-time.After(30 * time.Second):
		t.Fatalf("kfake did not start:\n%s", logs.String())
	}
	return nil
}

// TestScaleOutSurvivesSIGKILL runs three GoTrack processes, each with its
// own spool, producing to one topic of a kfake cluster run as a separate
// process. Under load, one of them is killed with SIGKILL and restarted on
// its spool. Every event id answered 2xx, by any instance, must be in the
// topic.
func TestScaleOutSurvivesSIGKILL(t *testing.T) {
	// Each produce takes 50ms, so the victim has batches in flight when it
	// is killed.
	brokers := startKfake(t, 6, 50*time.Millisecond)
	env := []string{"OUTPUTS=kafka", "KAFKA_BROKERS=" + strings.Join(brokers, ","), "KAFKA_KEY=visitor_id",
		"FLUSH_INTERVAL=20ms", "RETRY_MAX_BACKOFF=200ms"}
	const instances = 3
	dirs := make([]string, instances)
	procs := make([]*proc, instances)
	for i := range procs {
		dirs[i] = t.TempDir()
		procs[i] = startGotrackIn(t, dirs[i], append(env, "SPOOL_DIR="+filepath.Join(dirs[i], "spool"))...)
	}
	var mu sync.Mutex // guards procs while the victim restarts
	ingestOf := func(i int) string {
		mu.Lock()
		defer mu.Unlock()
		return procs[i].ingest
	}

	// Load: 6 clients, 60 requests each, 10 events per request, spread over
	// the instances round robin. A request that fails (the killed instance)
	// is not retried: only what was answered 2xx must arrive.
	const clients, requests, perRequest = 6, 60, 10
	var (
		accepted []string
		amu      sync.Mutex
		refused  int
		wg       sync.WaitGroup
	)
	killAt := make(chan struct{})
	var killOnce sync.Once
	client := &http.Client{Timeout: 10 * time.Second}
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range requests {
				if c == 0 && r == requests/3 {
					killOnce.Do(func() { close(killAt) })
				}
				ids := make([]string, perRequest)
				var body bytes.Buffer
				body.WriteByte('[')
				for j := range ids {
					ids[j] = event.NewID(time.Now())
					if j > 0 {
						body.WriteByte(',')
					}
					fmt.Fprintf(&body, `{"event_id":%q,"type":"load","visitor_id":"v%d"}`, ids[j], (c*requests+r+j)%50)
				}
				body.WriteByte(']')
				resp, err := client.Post("http://"+ingestOf((c+r)%instances)+"/collect", "application/json", &body)
				if err != nil {
					amu.Lock()
					refused++
					amu.Unlock()
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				amu.Lock()
				if resp.StatusCode/100 == 2 {
					accepted = append(accepted, ids...)
				} else {
					refused++
				}
				amu.Unlock()
			}
		}()
	}

	// SIGKILL instance 1 a third of the way in, then restart it on its spool.
	<-killAt
	victim := procs[1]
	victim.cmd.Process.Kill()
	<-victim.exited
	restarted := startGotrackIn(t, dirs[1], append(env, "SPOOL_DIR="+filepath.Join(dirs[1], "spool"),
		"METRICS_ENABLED=true", "METRICS_ADDR=127.0.0.1:0")...)
	// The kill must have caught events accepted but not yet delivered, or
	// this test would prove nothing about them.
	_, metrics := httpGet(t, restarted.metrics)
	recovered := ""
	for line := range strings.Lines(metrics) {
		if v, ok := strings.CutPrefix(line, `gotrack_spool_recovered_events_total{sink="kafka"} `); ok {
			recovered = strings.TrimSpace(v)
		}
	}
	if recovered == "" || recovered == "0" {
		t.Fatalf("the restarted instance recovered %q events from its spool; the kill caught nothing in flight", recovered)
	}
	mu.Lock()
	procs[1] = restarted
	mu.Unlock()
	wg.Wait()
	for _, p := range procs {
		p.stop(t)
	}
	if len(accepted) < clients*requests*perRequest/2 {
		t.Fatalf("only %d events accepted (%d requests refused); the load did not run", len(accepted), refused)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("gotrack.events"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	inTopic := map[string]int{}
	want := map[string]bool{}
	for _, id := range accepted {
		want[id] = true
	}
	found := 0
	testkit.Wait(testkit.Patience, func() bool { // the count of missing ids below fails the test
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		cl.PollFetches(ctx).EachRecord(func(r *kgo.Record) {
			e, err := event.Decode(r.Value)
			if err != nil {
				t.Errorf("record is not an event: %v", err)
				return
			}
			if inTopic[e.EventID] == 0 && want[e.EventID] {
				found++
			}
			inTopic[e.EventID]++
		})
		return found == len(want)
	})
	missing := 0
	for id := range want {
		if inTopic[id] == 0 {
			if missing < 5 {
				t.Errorf("event %s was answered 2xx but is not in the topic", id)
			}
			missing++
		}
	}
	dups := 0
	for _, n := range inTopic {
		dups += n - 1
	}
	t.Logf("%d events accepted by 3 instances (one SIGKILLed and restarted with %s events in its spool), %d requests refused; %d of them in the topic, %d missing, %d duplicates",
		len(want), recovered, refused, found, missing, dups)
}
