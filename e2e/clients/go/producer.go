package main

import (
	"context"
	"fmt"
	"sync"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

// produce sends --count messages, sync or async, and prints each send result.
func produce(a args) {
	p, err := rocketmq.NewProducer(producer.WithNameServer([]string{*a.namesrv}), producer.WithGroupName(*a.group), producer.WithRetry(2),
		producer.WithCredentials(a.credentials()))
	if err != nil {
		fail(err)
	}
	if err := p.Start(); err != nil {
		fail(err)
	}
	defer p.Shutdown()
	var wg sync.WaitGroup
	sent := 0
	var mu sync.Mutex
	for i := 0; i < *a.count; i++ {
		m := primitive.NewMessage(*a.topic, []byte(fmt.Sprintf("go-%d", i)))
		if *a.tag != "" {
			m.WithTag(*a.tag)
		}
		m.WithProperty("index", fmt.Sprint(i))
		report := func(r *primitive.SendResult, err error) {
			if err != nil {
				emit(map[string]any{"error": err.Error()})
				return
			}
			mu.Lock()
			sent++
			mu.Unlock()
			emit(map[string]any{"id": r.MsgID, "offsetMsgId": r.OffsetMsgID, "status": r.Status, "queue": r.MessageQueue.QueueId})
		}
		if *a.mode == "async" {
			wg.Add(1)
			err := p.SendAsync(context.Background(), func(_ context.Context, r *primitive.SendResult, err error) {
				defer wg.Done()
				report(r, err)
			}, m)
			if err != nil {
				wg.Done()
				report(nil, err)
			}
		} else {
			report(p.SendSync(context.Background(), m))
		}
	}
	wg.Wait()
	emit(map[string]any{"sent": sent})
}
