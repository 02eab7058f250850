// Command kfake runs franz-go's in-memory fake Kafka cluster (kfake) as a
// process of its own, for the load benchmark's kafka scenario: one broker
// on 127.0.0.1, an ephemeral port, and the topics named by -topics, each
// with -partitions partitions. It prints the broker's host:port on stdout,
// then runs until SIGTERM or SIGINT, or until its stdin is closed (so that
// it ends with the benchmark even when that dies without a signal).
//
//	go run ./bench/kfake -topics gotrack.events,bench.plain -partitions 3
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	topics := flag.String("topics", "gotrack.events", "comma list of topics to create")
	partitions := flag.Int("partitions", 3, "partitions per topic, 1 to 1000")
	flag.Parse()
	if *partitions < 1 || *partitions > 1000 || *topics == "" {
		fmt.Fprintln(os.Stderr, "kfake: want -partitions from 1 to 1000 and at least one topic")
		os.Exit(2)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(*partitions), strings.Split(*topics, ",")...))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		os.Exit(1)
	}
	defer c.Close()
	fmt.Println(c.ListenAddrs()[0])

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdinClosed)
	}()
	select {
	case <-stop:
	case <-stdinClosed:
	}
}
