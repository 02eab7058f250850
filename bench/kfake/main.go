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
	"errors"
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
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	if err := run(os.Args[1:], os.Stdin, os.Stdout, stop); err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		os.Exit(1)
	}
}

// run serves the cluster until stop receives or stdin ends.
func run(args []string, stdin io.Reader, stdout io.Writer, stop <-chan os.Signal) error {
	fs := flag.NewFlagSet("kfake", flag.ContinueOnError)
	topics := fs.String("topics", "gotrack.events", "comma list of topics to create")
	partitions := fs.Int("partitions", 3, "partitions per topic, 1 to 1000")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *partitions < 1 || *partitions > 1000 || *topics == "" {
		return errors.New("want -partitions from 1 to 1000 and at least one topic")
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(*partitions), strings.Split(*topics, ",")...))
	if err != nil {
		return err
	}
	defer c.Close()
	fmt.Fprintln(stdout, c.ListenAddrs()[0])

	stdinClosed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, stdin)
		close(stdinClosed)
	}()
	select {
	case <-stop:
	case <-stdinClosed:
	}
	return nil
}
