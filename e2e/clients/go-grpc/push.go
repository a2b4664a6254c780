package main

import (
	"strconv"
	"strings"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

// push: a PushConsumer of --group on --topic. The listener fails messages whose index (the
// number after the body's last '-') is a multiple of --fail-every, always; it prints every consume
// call with its result. Done after --count distinct successes and, with --until-attempts N, once
// every always-failing message was seen at attempt N; or after --timeout s.
func push(o *opts) error {
	var mu sync.Mutex
	ok, failing := map[string]bool{}, map[string]int32{}
	done := make(chan struct{})
	var once sync.Once
	listener := &rmq.FuncMessageListener{Consume: func(m *rmq.MessageView) rmq.ConsumerResult {
		body := string(m.GetBody())
		i, _ := strconv.Atoi(body[strings.LastIndex(body, "-")+1:])
		fail := o.failEvery > 0 && i%o.failEvery == 0
		mu.Lock()
		defer mu.Unlock()
		d := described(m)
		d["result"] = map[bool]string{true: "failure", false: "success"}[fail]
		emit(d)
		if fail {
			failing[m.GetMessageId()] = max(failing[m.GetMessageId()], m.GetDeliveryAttempt())
		} else {
			ok[m.GetMessageId()] = true
		}
		finished := len(ok) >= o.count
		for _, n := range failing {
			finished = finished && int(n) >= o.untilAttempts
		}
		if finished {
			once.Do(func() { close(done) })
		}
		if fail {
			return rmq.FAILURE
		}
		return rmq.SUCCESS
	}}
	c, err := rmq.NewPushConsumer(o.config(), rmq.WithPushMessageListener(listener),
		rmq.WithPushSubscriptionExpressions(map[string]*rmq.FilterExpression{o.topic: o.filterExpression()}))
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return err
	}
	defer c.GracefulStop()
	select {
	case <-done:
	case <-time.After(time.Duration(o.timeout * float64(time.Second))):
	}
	return nil
}
