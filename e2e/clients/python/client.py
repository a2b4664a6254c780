"""Drives the official RocketMQ 5.x Python client (rocketmq-python-client 5.1.2) for the e2e suite.

Same command-line contract as ../node/client.js and ../rust-v5: `send` prints one JSON line per
acknowledged message ({"id","tag","keys","body"}); `receive` (SimpleConsumer) and `push`
(PushConsumer, Python only) print one JSON line per received message ({"id","tag","keys","body","attempt"})
until --count messages or --timeout seconds.
"""
import argparse
import json
import sys
import time

import threading

from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message, MessageListener, Producer,
                      PushConsumer, SimpleConsumer, TransactionChecker, TransactionResolution)


def config(a):
    return ClientConfiguration(a.endpoint, Credentials(), request_timeout=10)


def send(a):
    producer = Producer(config(a), (a.topic,))
    producer.startup()
    try:
        for i in range(a.count):
            m = Message()
            m.topic = a.topic
            m.body = f"{a.body_prefix}-{i}".encode()
            m.tag = a.tag
            key = f"{a.key_prefix}-{i}"
            m.keys = key
            m.add_property("origin", "python")
            receipt = producer.send(m)
            print(json.dumps({"id": receipt.message_id, "tag": a.tag, "keys": [key],
                              "body": m.body.decode()}), flush=True)
    finally:
        producer.shutdown()


def receive(a):
    consumer = SimpleConsumer(config(a), a.group, {a.topic: FilterExpression(a.filter)}, await_duration=a.poll)
    consumer.startup()
    got = 0
    deadline = time.monotonic() + a.timeout
    try:
        while got < a.count and time.monotonic() < deadline:
            for m in consumer.receive(min(32, a.count - got), a.invisible) or []:
                print(json.dumps({"id": m.message_id, "tag": m.tag, "keys": sorted(m.keys or []), "body": m.body.decode(),
                                  "attempt": m.delivery_attempt}), flush=True)
                if a.ack:
                    consumer.ack(m)
                got += 1
    finally:
        consumer.shutdown()


def push(a):
    """A PushConsumer: the client asks for assignments and long-polls with auto-renewed invisible time."""
    lock, done, seen = threading.Lock(), threading.Event(), []

    class Listener(MessageListener):
        def consume(self, m):
            with lock:
                print(json.dumps({"id": m.message_id, "tag": m.tag, "keys": sorted(m.keys or []), "body": m.body.decode(),
                                  "attempt": m.delivery_attempt}), flush=True)
                seen.append(m.message_id)
                if len(seen) >= a.count:
                    done.set()
            return ConsumeResult.SUCCESS

    consumer = PushConsumer(config(a), a.group, Listener(), {a.topic: FilterExpression(a.filter)})
    consumer.startup()
    try:
        done.wait(a.timeout)
    finally:
        consumer.shutdown()


def txsend(a):
    """Transactional messages: send --count, then commit / rollback / leave open (--action); the
    checker answers check-backs with --checker and prints {"check": id}. Stays up --hold seconds,
    or until --until-checks check-backs arrived."""
    answer = {"commit": TransactionResolution.COMMIT, "rollback": TransactionResolution.ROLLBACK,
              "unknown": TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED}[a.checker]
    lock, enough, checks = threading.Lock(), threading.Event(), [0]

    class Checker(TransactionChecker):
        def check(self, message):
            with lock:
                print(json.dumps({"check": message.message_id, "answer": a.checker}), flush=True)
                checks[0] += 1
                if a.until_checks and checks[0] >= a.until_checks:
                    enough.set()
            return answer

    producer = Producer(config(a), (a.topic,), Checker())
    producer.startup()
    try:
        for i in range(a.count):
            tx = producer.begin_transaction()
            m = Message()
            m.topic = a.topic
            m.body = f"{a.body_prefix}-{i}".encode()
            m.tag = a.tag
            receipt = producer.send(m, tx)
            print(json.dumps({"id": receipt.message_id, "body": m.body.decode()}), flush=True)
            if a.action == "commit":
                tx.commit()
            elif a.action == "rollback":
                tx.rollback()
        enough.wait(a.hold)
    finally:
        producer.shutdown()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("send", "receive", "push", "txsend"):
        s = sub.add_parser(name)
        s.add_argument("--endpoint", required=True)
        s.add_argument("--topic", required=True)
        s.add_argument("--count", type=int, required=True)
    s = sub.choices["send"]
    s.add_argument("--tag", default="TagA")
    s.add_argument("--key-prefix", default="key")
    s.add_argument("--body-prefix", default="body")
    r = sub.choices["receive"]
    r.add_argument("--group", required=True)
    r.add_argument("--filter", default="*")
    r.add_argument("--invisible", type=int, default=20, help="invisible duration, s")
    r.add_argument("--poll", type=int, default=5, help="long polling timeout, s")
    r.add_argument("--timeout", type=float, default=30, help="give up after, s")
    r.add_argument("--no-ack", dest="ack", action="store_false")
    u = sub.choices["push"]
    u.add_argument("--group", required=True)
    u.add_argument("--filter", default="*")
    u.add_argument("--timeout", type=float, default=30, help="give up after, s")
    t = sub.choices["txsend"]
    t.add_argument("--tag", default="TagA")
    t.add_argument("--body-prefix", default="body")
    t.add_argument("--action", choices=["commit", "rollback", "none"], default="commit")
    t.add_argument("--checker", choices=["commit", "rollback", "unknown"], default="commit")
    t.add_argument("--hold", type=float, default=0, help="stay up answering check-backs, s")
    t.add_argument("--until-checks", type=int, default=0, help="stop holding after this many check-backs")
    a = p.parse_args()
    {"send": send, "receive": receive, "push": push, "txsend": txsend}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
