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
// --hold s, or until --until-checks check-backs arrived.
func txsend(o *opts) error {
	answer, known := map[string]rmq.TransactionResolution{"commit": rmq.COMMIT, "rollback": rmq.ROLLBACK,
		"unknown": rmq.UNKNOWN}[o.checker]
	if !known {
		return fmt.Errorf("unknown --checker %q", o.checker)
	}
	var mu sync.Mutex
	checks := 0
	enough := make(chan struct{})
	checker := &rmq.TransactionChecker{Check: func(m *rmq.MessageView) rmq.TransactionResolution {
		mu.Lock()
		defer mu.Unlock()
		emit(map[string]any{"check": m.GetMessageId(), "answer": o.checker})
		checks++
		if o.untilChecks > 0 && checks == o.untilChecks {
			close(enough)
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
