package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestServesTopicsUntilStdinCloses: the printed address serves the
// topics asked for, with their partitions, and closing stdin stops it.
func TestServesTopicsUntilStdinCloses(t *testing.T) {
	stdinR, stdinW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run([]string{"-topics", "a,b", "-partitions", "4"}, stdinR, outW, make(chan os.Signal))
	}()
	addr, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.TrimSpace(addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, cl)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]int{}
	for _, tp := range resp.Topics {
		got[*tp.Topic] = len(tp.Partitions)
	}
	if got["a"] != 4 || got["b"] != 4 {
		t.Errorf("topics and partitions %v, want a and b with 4 each", got)
	}
	stdinW.Close()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30s after stdin closed")
	}
}

func TestRefusesBadPartitions(t *testing.T) {
	if err := run([]string{"-partitions", "0"}, strings.NewReader(""), io.Discard, nil); err == nil {
		t.Fatal("-partitions 0 accepted")
	}
}
