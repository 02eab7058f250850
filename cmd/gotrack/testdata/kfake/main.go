// Command kfake runs franz-go's fake Kafka cluster as a process of its
// own, for end-to-end tests that need a Kafka that outlives the processes
// producing to it. It prints one line, "brokers HOST:PORT,...", once the
// cluster listens, and runs until SIGTERM or SIGINT.
//
//	kfake [-brokers 3] [-partitions 6] [-topic gotrack.events] [-produce-delay 0]
//
// -produce-delay holds every produce request that long before the cluster
// answers it, so that a producer killed under load has batches in flight.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

func main() {
	brokers := flag.Int("brokers", 3, "number of brokers")
	partitions := flag.Int("partitions", 6, "partitions of the topic")
	topic := flag.String("topic", "gotrack.events", "topic to create")
	delay := flag.Duration("produce-delay", 0, "hold each produce request this long")
	flag.Parse()
	c, err := kfake.NewCluster(kfake.NumBrokers(*brokers), kfake.SeedTopics(int32(*partitions), *topic))
	if err != nil {
		fmt.Fprintln(os.Stderr, "kfake:", err)
		os.Exit(1)
	}
	defer c.Close()
	if *delay > 0 {
		c.ControlKey(int16(kmsg.Produce), func(kmsg.Request) (kmsg.Response, error, bool) {
			c.KeepControl()
			time.Sleep(*delay)
			return nil, nil, false // then handled as usual
		})
	}
	fmt.Printf("brokers %s\n", strings.Join(c.ListenAddrs(), ","))
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	<-stop
}
