package main

import (
	"context"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

// receive: a SimpleConsumer of --group on --topic until --count messages or --timeout s;
// --invisible s, --poll s of long polling, --no-ack leaves them unacknowledged.
func receive(o *opts) error {
	c, err := rmq.NewSimpleConsumer(o.config(), rmq.WithSimpleAwaitDuration(time.Duration(o.poll)*time.Second),
		rmq.WithSimpleSubscriptionExpressions(map[string]*rmq.FilterExpression{o.topic: o.filterExpression()}))
	if err != nil {
		return err
	}
	if err := c.Start(); err != nil {
		return err
	}
	defer c.GracefulStop()
	deadline := time.Now().Add(time.Duration(o.timeout * float64(time.Second)))
	for got := 0; got < o.count && time.Now().Before(deadline); {
		batch, err := c.Receive(context.Background(), int32(min(32, o.count-got)), time.Duration(o.invisible)*time.Second)
		if err != nil && !isEmpty(err) {
			return err
		}
		for _, m := range batch {
			emit(described(m))
			if o.ack {
				if err := c.Ack(context.Background(), m); err != nil {
					return err
				}
			}
			got++
		}
	}
	return nil
}

// isEmpty tells the client's error for a long poll that found nothing (MESSAGE_NOT_FOUND) from
// a real failure.
func isEmpty(err error) bool {
	e, ok := rmq.AsErrRpcStatus(err)
	return ok && e.GetCode() == 40401
}
