package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

// txsend: --count transactional messages, each committed, rolled back or left open (--action);
// the TransactionChecker answers check-backs with --checker and prints {"check": id}. Stays up
// --hold s, or until --until-checks check-backs arrived, or until --until-checked of the messages
// this process sent were checked back (Apache RocketMQ may also check back an earlier producer's
// transaction that already ended: apache/rocketmq#1517).
func txsend(o *opts) error {
	answer, known := map[string]rmq.TransactionResolution{"commit": rmq.COMMIT, "rollback": rmq.ROLLBACK,
		"unknown": rmq.UNKNOWN}[o.checker]
	if !known {
		return fmt.Errorf("unknown --checker %q", o.checker)
	}
	var mu sync.Mutex
	checks, mine, checked, answered := 0, map[string]bool{}, map[string]bool{}, map[string]bool{}
	enough, once := make(chan struct{}), sync.Once{}
	checker := &rmq.TransactionChecker{Check: func(m *rmq.MessageView) rmq.TransactionResolution {
		mu.Lock()
		defer mu.Unlock()
		emit(map[string]any{"check": m.GetMessageId(), "answer": o.checker})
		checks++
		answered[m.GetMessageId()] = true
		if mine[m.GetMessageId()] {
			checked[m.GetMessageId()] = true
		}
		if o.untilChecks > 0 && checks >= o.untilChecks || o.untilChecked > 0 && len(checked) >= o.untilChecked {
			once.Do(func() { close(enough) })
		}
		return answer
	}}
	p, err := startProducer(o, rmq.WithTransactionChecker(checker))
	if err != nil {
		return err
	}
	defer p.GracefulStop()
	for i := 0; i < o.count; i++ {
		tx := p.BeginTransaction()
		m := message(o, i)
		r, err := p.SendWithTransaction(context.Background(), m, tx)
		if err != nil {
			return err
		}
		mu.Lock()
		mine[r[0].MessageID] = true
		mu.Unlock()
		emit(map[string]any{"id": r[0].MessageID, "body": string(m.Body)})
		switch o.action {
		case "commit":
			err = tx.Commit()
		case "rollback":
			err = tx.RollBack()
		}
		if err != nil {
			return err
		}
	}
	deadline := time.Now().Add(time.Duration(o.hold * float64(time.Second)))
	select {
	case <-enough:
	case <-time.After(time.Until(deadline)):
		return nil
	}
	if answer != rmq.COMMIT {
		return nil
	}
	mu.Lock()
	committed := make([]string, 0, len(answered))
	for id := range answered {
		committed = append(committed, id)
	}
	mu.Unlock()
	return awaitVisible(o, committed, deadline)
}

// awaitVisible waits, until deadline, until a probe consumer group of its own (the test's groups
// stay untouched; it acks nothing) receives every message in ids: the client sends a check-back's
// answer on a goroutine of its own after Check returns, so stopping the producer as soon as Check
// was called could lose the commit.
func awaitVisible(o *opts, ids []string, deadline time.Time) error {
	cfg := o.config()
	cfg.ConsumerGroup = "txsend-probe"
	c, err := rmq.NewSimpleConsumer(cfg, rmq.WithSimpleAwaitDuration(5*time.Second),
		rmq.WithSimpleSubscriptionExpressions(map[string]*rmq.FilterExpression{o.topic: rmq.SUB_ALL}))
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return err
	}
	defer c.GracefulStop()
	missing := map[string]bool{}
	for _, id := range ids {
		missing[id] = true
	}
	for len(missing) > 0 && time.Now().Before(deadline) {
		batch, err := c.Receive(context.Background(), 32, 10*time.Second)
		if err != nil && !isEmpty(err) {
			return err
		}
		for _, m := range batch {
			delete(missing, m.GetMessageId())
		}
	}
	return nil
}
