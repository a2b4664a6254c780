// The Go Remoting client drivers: github.com/apache/rocketmq-client-go/v2, unchanged.
// `ferrocket-e2e-go <producer|consumer|txproducer> --namesrv H:P --topic T ...` prints one JSON
// line per message, like the other drivers.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"

	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/rlog"
)

var outMu sync.Mutex

// emit writes one JSON line atomically (callbacks print from several goroutines).
func emit(v map[string]any) {
	b, _ := json.Marshal(v)
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Println(string(b))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "error:", err)
	os.Exit(1)
}

func main() {
	rlog.SetLogLevel("error")
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: %s producer|consumer|txproducer [flags]", os.Args[0]))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	a := args{
		namesrv: fs.String("namesrv", "127.0.0.1:9876", "nameserver host:port"),
		topic:   fs.String("topic", "e2e", "topic"),
		group:   fs.String("group", "e2e-go", "producer or consumer group"),
		count:   fs.Int("count", 10, "messages to send / expect"),
		mode:    fs.String("mode", "sync", "producer: sync|async"),
		tag:     fs.String("tag", "", "tag of sent messages"),
		timeout: fs.Int("timeout", 60, "consumer: give up after, s"),
		action:  fs.String("action", "commit", "txproducer: local transaction answer commit|rollback|unknown"),
		checker: fs.String("checker", "commit", "txproducer: check-back answer"),
		hold:    fs.Int("hold", 0, "txproducer: stay up answering check-backs, s"),
		ak:      fs.String("access-key", "", "sign requests as this user (ACL)"),
		sk:      fs.String("secret-key", "", "the user's secret key"),
	}
	_ = fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "producer":
		produce(a)
	case "consumer":
		consume(a)
	case "txproducer":
		txProduce(a)
	default:
		fail(fmt.Errorf("unknown role %q", os.Args[1]))
	}
}

type args struct {
	namesrv, topic, group, mode, tag, action, checker, ak, sk *string
	count, timeout, hold                                      *int
}

// credentials are what --access-key and --secret-key give (empty: requests go unsigned).
func (a args) credentials() primitive.Credentials {
	return primitive.Credentials{AccessKey: *a.ak, SecretKey: *a.sk}
}
