package main

import (
	"context"
	"sync"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/consumer"
	"github.com/apache/rocketmq-client-go/v2/primitive"
)

// consume push-consumes --topic as --group until --count distinct ids or --timeout seconds.
func consume(a args) {
	c, err := rocketmq.NewPushConsumer(consumer.WithNameServer([]string{*a.namesrv}), consumer.WithGroupName(*a.group),
		consumer.WithConsumeFromWhere(consumer.ConsumeFromFirstOffset), consumer.WithCredentials(a.credentials()))
	if err != nil {
		fail(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	done := make(chan struct{})
	err = c.Subscribe(*a.topic, consumer.MessageSelector{}, func(_ context.Context, msgs ...*primitive.MessageExt) (consumer.ConsumeResult, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range msgs {
			emit(map[string]any{"id": m.MsgId, "queue": m.Queue.QueueId, "offset": m.QueueOffset, "body": string(m.Body),
				"index": m.GetProperty("index"), "reconsumeTimes": m.ReconsumeTimes})
			seen[m.MsgId] = true
		}
		if len(seen) >= *a.count {
			select {
			case <-done:
			default:
				close(done)
			}
		}
		return consumer.ConsumeSuccess, nil
	})
	if err != nil {
		fail(err)
	}
	if err := c.Start(); err != nil {
		fail(err)
	}
	select {
	case <-done:
	case <-time.After(time.Duration(*a.timeout) * time.Second):
	}
	_ = c.Shutdown()
	mu.Lock()
	emit(map[string]any{"received": len(seen)})
	mu.Unlock()
}
