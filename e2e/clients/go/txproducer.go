package main

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/apache/rocketmq-client-go/v2"
	"github.com/apache/rocketmq-client-go/v2/primitive"
	"github.com/apache/rocketmq-client-go/v2/producer"
)

type listener struct {
	action, checker string
	checks          atomic.Int32
}

func state(s string) primitive.LocalTransactionState {
	switch s {
	case "commit":
		return primitive.CommitMessageState
	case "rollback":
		return primitive.RollbackMessageState
	}
	return primitive.UnknowState
}

func (l *listener) ExecuteLocalTransaction(*primitive.Message) primitive.LocalTransactionState {
	return state(l.action)
}

func (l *listener) CheckLocalTransaction(m *primitive.MessageExt) primitive.LocalTransactionState {
	l.checks.Add(1)
	emit(map[string]any{"checked": m.TransactionId, "body": string(m.Body)})
	return state(l.checker)
}

// txProduce sends --count transactional messages and answers check-backs for --hold seconds.
func txProduce(a args) {
	l := &listener{action: *a.action, checker: *a.checker}
	p, err := rocketmq.NewTransactionProducer(l, producer.WithNameServer([]string{*a.namesrv}), producer.WithGroupName(*a.group))
	if err != nil {
		fail(err)
	}
	if err := p.Start(); err != nil {
		fail(err)
	}
	for i := 0; i < *a.count; i++ {
		r, err := p.SendMessageInTransaction(context.Background(), primitive.NewMessage(*a.topic, []byte(fmt.Sprintf("gotx-%d", i))))
		if err != nil {
			fail(err)
		}
		emit(map[string]any{"id": r.MsgID, "state": int(r.State)})
	}
	deadline := time.Now().Add(time.Duration(*a.hold) * time.Second)
	for time.Now().Before(deadline) && int(l.checks.Load()) < *a.count {
		time.Sleep(50 * time.Millisecond)
	}
	_ = p.Shutdown()
	emit(map[string]any{"checks": l.checks.Load()})
}
