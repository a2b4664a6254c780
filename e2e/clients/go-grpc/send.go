package main

import (
	"context"
	"strconv"
	"time"

	rmq "github.com/apache/rocketmq-clients/golang/v5"
)

// send: --count messages to --topic, one JSON line per acknowledged send. NORMAL, or FIFO with
// --message-groups N (message group `group-<i mod N>`), or DELAY with --delay s.
func send(o *opts) error {
	p, err := startProducer(o)
	if err != nil {
		return err
	}
	defer p.GracefulStop()
	for i := 0; i < o.count; i++ {
		m := message(o, i)
		out := map[string]any{}
		if o.messageGroups > 0 {
			m.SetMessageGroup("group-" + strconv.Itoa(i%o.messageGroups))
			out["group"] = *m.GetMessageGroup()
		}
		if o.delay > 0 {
			due := time.Unix(int64(now()+o.delay), 0)
			m.SetDelayTimestamp(due)
			out["due"] = due.Unix()
		}
		r, err := p.Send(context.Background(), m)
		if err != nil {
			return err
		}
		for k, v := range map[string]any{"id": r[0].MessageID, "tag": o.tag, "keys": m.GetKeys(), "body": string(m.Body),
			"t": now()} {
			out[k] = v
		}
		emit(out)
	}
	return nil
}

// startProducer starts a producer of --topic with the given options.
func startProducer(o *opts, extra ...rmq.ProducerOption) (rmq.Producer, error) {
	p, err := rmq.NewProducer(o.config(), append([]rmq.ProducerOption{rmq.WithTopics(o.topic)}, extra...)...)
	if err != nil {
		return nil, err
	}
	return p, p.Start()
}

// message is message i of a run: body <body-prefix>-i, key <key-prefix>-i, the shared properties.
func message(o *opts, i int) *rmq.Message {
	m := &rmq.Message{Topic: o.topic, Body: []byte(o.bodyPrefix + "-" + strconv.Itoa(i))}
	m.SetTag(o.tag)
	m.SetKeys(o.keyPrefix + "-" + strconv.Itoa(i))
	m.AddProperty("origin", "go")
	m.AddProperty("i", strconv.Itoa(i))
	m.AddProperty("color", []string{"red", "green", "blue"}[i%3])
	return m
}
