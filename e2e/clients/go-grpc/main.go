// Drives the official RocketMQ 5.x Go gRPC client (github.com/apache/rocketmq-clients/golang/v5
// v5.1.4) for the e2e suite, with its default settings (TLS on).
//
// Same command-line contract as ../python/client.py: `send`, `receive` (SimpleConsumer), `push`
// (PushConsumer) and `txsend` print one JSON line per acknowledged send or received message.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
	"github.com/apache/rocketmq-clients/golang/v5/credentials"
)

var outMu sync.Mutex

// emit writes one JSON line; listener and checker goroutines print concurrently.
func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

// now is the wall clock in seconds since the epoch, as the other drivers' "t".
func now() float64 { return float64(time.Now().UnixNano()) / 1e9 }

// described is one received message as the other drivers print it.
func described(m *rmq.MessageView) map[string]any {
	keys := append([]string{}, m.GetKeys()...)
	sort.Strings(keys)
	d := map[string]any{"id": m.GetMessageId(), "tag": deref(m.GetTag()), "keys": keys, "body": string(m.GetBody()),
		"attempt": m.GetDeliveryAttempt(), "t": now(), "props": m.GetProperties()}
	if g := deref(m.GetMessageGroup()); g != "" {
		d["group"] = g
	}
	if due := m.GetDeliveryTimestamp(); due != nil {
		d["due_ms"] = due.UnixMilli()
	}
	return d
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// opts are every subcommand's flags; each subcommand reads the ones it knows.
type opts struct {
	endpoint, topic, group, tag, keyPrefix, bodyPrefix, filter, action, checker                string
	count, messageGroups, invisible, poll, failEvery, untilAttempts, untilChecks, untilChecked int
	delay, timeout, hold                                                                       float64
	ack, sql                                                                                   bool
}

func (o *opts) config() *rmq.Config {
	return &rmq.Config{Endpoint: o.endpoint, ConsumerGroup: o.group, Credentials: &credentials.SessionCredentials{}}
}

func (o *opts) filterExpression() *rmq.FilterExpression {
	if o.sql {
		return rmq.NewFilterExpressionWithType(o.filter, rmq.SQL92)
	}
	return rmq.NewFilterExpressionWithType(o.filter, rmq.TAG)
}

func parse(cmd string, args []string) *opts {
	o := &opts{}
	f := flag.NewFlagSet(cmd, flag.ExitOnError)
	f.StringVar(&o.endpoint, "endpoint", "", "host:port of the gRPC endpoint")
	f.StringVar(&o.topic, "topic", "", "topic")
	f.IntVar(&o.count, "count", 1, "messages to send or receive")
	f.StringVar(&o.group, "group", "", "consumer group")
	f.StringVar(&o.tag, "tag", "TagA", "tag of sent messages")
	f.StringVar(&o.keyPrefix, "key-prefix", "key", "key of message i is <prefix>-<i>")
	f.StringVar(&o.bodyPrefix, "body-prefix", "body", "body of message i is <prefix>-<i>")
	f.IntVar(&o.messageGroups, "message-groups", 0, "FIFO: spread over this many message groups")
	f.Float64Var(&o.delay, "delay", 0, "DELAY: due this many whole seconds after sending")
	f.StringVar(&o.filter, "filter", "*", "tag expression, or SQL92 with --sql")
	f.BoolVar(&o.sql, "sql", false, "--filter is a SQL92 expression")
	f.IntVar(&o.invisible, "invisible", 20, "invisible duration, s")
	f.IntVar(&o.poll, "poll", 5, "long polling timeout, s")
	f.Float64Var(&o.timeout, "timeout", 30, "give up after, s")
	f.BoolVar(&o.ack, "ack", true, "acknowledge received messages")
	noAck := f.Bool("no-ack", false, "leave received messages unacknowledged")
	f.IntVar(&o.failEvery, "fail-every", 0, "push: always fail messages whose index is a multiple")
	f.IntVar(&o.untilAttempts, "until-attempts", 0, "push: done once every failing message reached this attempt")
	f.StringVar(&o.action, "action", "commit", "txsend: commit, rollback or none")
	f.StringVar(&o.checker, "checker", "commit", "txsend: the check-back answer, commit, rollback or unknown")
	f.Float64Var(&o.hold, "hold", 0, "txsend: stay up answering check-backs, s")
	f.IntVar(&o.untilChecks, "until-checks", 0, "txsend: stop holding after this many check-backs")
	f.IntVar(&o.untilChecked, "until-checked", 0, "txsend: stop holding once this many messages sent here were checked back")
	f.Parse(args)
	if *noAck {
		o.ack = false
	}
	return o
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: ferrocket-e2e-go-grpc send|receive|push|txsend --endpoint H:P --topic T ...")
		os.Exit(2)
	}
	// The client logs to ~/logs/rocketmq by default; keep its log beside the other temp files.
	os.Setenv(rmq.CLIENT_LOG_ROOT, filepath.Join(os.TempDir(), "ferrocket-e2e-go-grpc"))
	rmq.ResetLogger()
	run := map[string]func(*opts) error{"send": send, "receive": receive, "push": push, "txsend": txsend}[os.Args[1]]
	if run == nil {
		fmt.Fprintf(os.Stderr, "unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err := run(parse(os.Args[1], os.Args[2:])); err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}
