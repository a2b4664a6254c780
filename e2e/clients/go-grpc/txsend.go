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
	checks, mine, checked := 0, map[string]bool{}, map[string]bool{}
	enough, once := make(chan struct{}), sync.Once{}
	checker := &rmq.TransactionChecker{Check: func(m *rmq.MessageView) rmq.TransactionResolution {
		mu.Lock()
		defer mu.Unlock()
		emit(map[string]any{"check": m.GetMessageId(), "answer": o.checker})
		checks++
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
	select {
	case <-enough:
	case <-time.After(time.Duration(o.hold * float64(time.Second))):
	}
	return nil
}
