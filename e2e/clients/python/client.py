"""Drives the official RocketMQ 5.x Python client (rocketmq-python-client 5.1.2) for the e2e suite.

Same command-line contract as ../node/client.js and ../rust-v5: `send` prints one JSON line per
acknowledged message ({"id","tag","keys","body"}); `receive` (SimpleConsumer) and `push`
(PushConsumer, Python only) print one JSON line per received message ({"id","tag","keys","body","attempt"})
until --count messages or --timeout seconds.
"""
import argparse
import json
import os
import sys
import time

import threading

from rocketmq.grpc_protocol import FilterType
from rocketmq import (ClientConfiguration, ConsumeResult, Credentials, FilterExpression, Message, MessageListener, Producer,
                      PushConsumer, SimpleConsumer, TransactionChecker, TransactionResolution)


OUT_LOCK = threading.Lock()


def emit(d):
    """Writes one JSON line atomically: checker and listener threads print concurrently with the
    main thread, and print() writes the text and its newline separately."""
    with OUT_LOCK:
        sys.stdout.write(json.dumps(d) + "\n")
        sys.stdout.flush()


def config(a):
    return ClientConfiguration(a.endpoint, Credentials(a.access_key, a.secret_key), request_timeout=10)


def send(a):
    """With --keep-going a failed send prints {"error", "i"} and the stream goes on; --stop-file
    ends it early once that file exists; --interval paces it."""
    import os
    producer = Producer(config(a), (a.topic,), tls_enable=a.tls)
    producer.startup()
    try:
        for i in range(a.count):
            if a.stop_file and os.path.exists(a.stop_file):
                break
            if a.interval:
                time.sleep(a.interval)
            m = Message()
            m.topic = a.topic
            m.body = (f"{a.body_prefix}-{i}" + "." * a.pad).encode()
            m.tag = a.tag
            key = f"{a.key_prefix}-{i}"
            m.keys = key
            m.add_property("origin", "python")
            m.add_property("i", str(i))
            m.add_property("color", ("red", "green", "blue")[i % 3])
            if a.message_groups:
                m.message_group = f"group-{i % a.message_groups}"
            if a.delay:
                m.delivery_timestamp = int(time.time() + a.delay)
            try:
                receipt = producer.send(m)
            except Exception as e:
                if not a.keep_going:
                    raise
                emit({"error": str(e)[:300], "i": i, "t": time.time()})
                continue
            out = {"id": receipt.message_id, "tag": a.tag, "keys": [key], "body": m.body.decode(),
                   "queue": str(receipt.message_queue), "t": time.time()}
            if a.delay:
                out["due"] = m.delivery_timestamp
                out["recall_handle"] = receipt.recall_handle
            if m.message_group:
                out["group"] = m.message_group
            emit(out)
            if i < a.recall_first:
                emit({"recalled": producer.recall_message(a.topic, receipt.recall_handle)})
    finally:
        producer.shutdown()


def receive(a):
    """With --until-ids FILE (one message id per line) it also stops once every one of them
    arrived."""
    consumer = SimpleConsumer(config(a), a.group, {a.topic: filter_of(a)}, await_duration=a.poll, tls_enable=a.tls)
    consumer.startup()
    # The client's startup waits for the server's settings only for a PushConsumer; a receive sent
    # before they arrive can reach a server that has not seen the subscription yet (RocketMQ's proxy
    # then fails it with a NullPointerException on Settings.getSubscription). Wait as it would.
    consumer._init_settings_event.wait(10)
    got = 0
    wanted = set(open(a.until_ids).read().split()) if a.until_ids else None
    deadline = time.monotonic() + a.timeout
    try:
        while got < a.count and time.monotonic() < deadline and wanted != set():
            for m in consumer.receive(min(32, a.count - got), a.invisible) or []:
                emit(described(m))
                if a.ack:
                    consumer.ack(m)
                got += 1
                if wanted is not None:
                    wanted.discard(m.message_id)
    finally:
        consumer.shutdown()


def filter_of(a):
    return FilterExpression(a.filter, FilterType.SQL if a.sql else FilterType.TAG)


def described(m):
    """One received message as a JSON-able dict (receive time `t` in seconds since the epoch)."""
    d = {"id": m.message_id, "tag": m.tag, "keys": sorted(m.keys or []), "body": m.body.decode(),
         "attempt": m.delivery_attempt, "t": time.time(), "props": dict(m.properties or {})}
    if m.message_group:
        d["group"] = m.message_group
    if m.delivery_timestamp:
        d["due_ms"] = m.delivery_timestamp
    return d


def push(a):
    """A PushConsumer: the client asks for assignments and long-polls with auto-renewed invisible time.
    The listener fails messages whose index (the number after the body's last '-') is a multiple of
    --fail-every, always, and any message with probability --fail-rate; it prints every consume call
    with its result. Done after --count distinct successes and, with --until-attempts N, once every
    always-failing message was seen at attempt N."""
    import random
    lock, done, ok, failing = threading.Lock(), threading.Event(), set(), {}
    rng = random.Random(7)

    def finished():
        return len(ok) >= a.count and all(n >= a.until_attempts for n in failing.values())

    class Listener(MessageListener):
        def consume(self, m):
            i = int(m.body.decode().rsplit("-", 1)[-1].rstrip("."))  # --pad appends dots
            always = a.fail_every and i % a.fail_every == 0
            fail = always or rng.random() < a.fail_rate
            with lock:
                d = described(m)
                d["result"] = "failure" if fail else "success"
                emit(d)
                if always:
                    failing[m.message_id] = max(failing.get(m.message_id, 0), m.delivery_attempt)
                elif not fail:
                    ok.add(m.message_id)
                if finished():
                    done.set()
            return ConsumeResult.FAILURE if fail else ConsumeResult.SUCCESS

    consumer = PushConsumer(config(a), a.group, Listener(), {a.topic: filter_of(a)}, tls_enable=a.tls)
    consumer.startup()
    try:
        done.wait(a.timeout)
        if a.linger:
            time.sleep(a.linger)  # observe that nothing more arrives (no redelivery after ack)
    finally:
        consumer.shutdown()


def txsend(a):
    """Transactional messages: send --count, then commit / rollback / leave open (--action); the
    checker answers check-backs with --checker and prints {"check": id}. Stays up --hold seconds,
    or until --until-checks check-backs arrived, or until --until-checked of the messages this
    process sent were checked back (Apache RocketMQ may also check back an earlier producer's
    transaction that already ended: apache/rocketmq#1517)."""
    answer = {"commit": TransactionResolution.COMMIT, "rollback": TransactionResolution.ROLLBACK,
              "unknown": TransactionResolution.TRANSACTION_RESOLUTION_UNSPECIFIED}[a.checker]
    lock, enough, checks, mine, checked, answered = threading.Lock(), threading.Event(), [0], set(), set(), set()

    class Checker(TransactionChecker):
        def check(self, message):
            with lock:
                emit({"check": message.message_id, "answer": a.checker})
                checks[0] += 1
                answered.add(message.message_id)
                if message.message_id in mine:
                    checked.add(message.message_id)
                if a.until_checks and checks[0] >= a.until_checks or a.until_checked and len(checked) >= a.until_checked:
                    enough.set()
            return answer

    producer = Producer(config(a), (a.topic,), Checker(), tls_enable=a.tls)
    producer.startup()
    try:
        for i in range(a.count):
            tx = producer.begin_transaction()
            m = Message()
            m.topic = a.topic
            m.body = f"{a.body_prefix}-{i}".encode()
            m.tag = a.tag
            receipt = producer.send(m, tx)
            with lock:
                mine.add(receipt.message_id)
            emit({"id": receipt.message_id, "body": m.body.decode()})
            if a.commit_after_file:
                wait_for_file(a.commit_after_file, 120)
                started = time.monotonic()
                try:
                    tx.commit()
                    emit({"committed": receipt.message_id, "ms": round((time.monotonic() - started) * 1000)})
                except Exception as e:  # reported, not raised: the test reads what the client saw
                    emit({"commit_error": str(e), "ms": round((time.monotonic() - started) * 1000)})
            elif a.action == "commit":
                tx.commit()
            elif a.action == "rollback":
                tx.rollback()
        deadline = time.monotonic() + a.hold
        if enough.wait(a.hold) and a.checker == "commit":
            with lock:
                committed = set(answered)
            await_visible(a, committed, deadline)
    finally:
        producer.shutdown()


def await_visible(a, ids, deadline):
    """Waits, until `deadline`, until a probe consumer group of its own (the test's groups stay
    untouched; it acks nothing) receives every message in `ids`: the client sends a check-back's
    answer after `check` returns, so shutting the producer down at once could lose the commit."""
    probe = argparse.Namespace(**{**vars(a), "group": "txsend-probe"})
    consumer = SimpleConsumer(config(probe), probe.group, {a.topic: FilterExpression("*")}, await_duration=5,
                              tls_enable=a.tls)
    consumer.startup()
    consumer._init_settings_event.wait(10)  # as in receive()
    try:
        missing = set(ids)
        while missing and time.monotonic() < deadline:
            for m in consumer.receive(32, 10) or []:
                missing.discard(m.message_id)
    finally:
        consumer.shutdown()


def wait_for_file(path, timeout):
    """Blocks until `path` exists, at most `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout} s")
        time.sleep(0.05)


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
    s.add_argument("--pad", type=int, default=0, help="bytes of padding after the body text")
    s.add_argument("--message-groups", type=int, default=0, help="FIFO: spread over this many message groups")
    s.add_argument("--delay", type=float, default=0, help="DELAY: due this many seconds after sending")
    s.add_argument("--recall-first", type=int, default=0, help="DELAY: recall the first N messages right after sending")
    s.add_argument("--keep-going", action="store_true", help="print failed sends and go on")
    s.add_argument("--stop-file", default="", help="stop sending once this file exists")
    s.add_argument("--interval", type=float, default=0, help="pause before each send, s")
    r = sub.choices["receive"]
    r.add_argument("--group", required=True)
    r.add_argument("--filter", default="*")
    r.add_argument("--invisible", type=int, default=20, help="invisible duration, s")
    r.add_argument("--poll", type=int, default=5, help="long polling timeout, s")
    r.add_argument("--timeout", type=float, default=30, help="give up after, s")
    r.add_argument("--no-ack", dest="ack", action="store_false")
    r.add_argument("--sql", action="store_true", help="--filter is a SQL92 expression")
    r.add_argument("--until-ids", default="", help="stop once every message id in this file arrived")
    u = sub.choices["push"]
    u.add_argument("--group", required=True)
    u.add_argument("--filter", default="*")
    u.add_argument("--sql", action="store_true", help="--filter is a SQL92 expression")
    u.add_argument("--timeout", type=float, default=30, help="give up after, s")
    u.add_argument("--fail-every", type=int, default=0, help="always fail messages whose index is a multiple")
    u.add_argument("--fail-rate", type=float, default=0.0, help="fail any message with this probability")
    u.add_argument("--until-attempts", type=int, default=0)
    u.add_argument("--linger", type=float, default=0, help="keep consuming this long after done, s")
    t = sub.choices["txsend"]
    t.add_argument("--tag", default="TagA")
    t.add_argument("--body-prefix", default="body")
    t.add_argument("--action", choices=["commit", "rollback", "none"], default="commit")
    t.add_argument("--checker", choices=["commit", "rollback", "unknown"], default="commit")
    t.add_argument("--hold", type=float, default=0, help="stay up answering check-backs, s")
    t.add_argument("--until-checks", type=int, default=0, help="stop holding after this many check-backs")
    t.add_argument("--until-checked", type=int, default=0,
                   help="stop holding once this many of the messages sent here were checked back")
    t.add_argument("--commit-after-file", default="",
                   help="commit each message once this file exists; print {committed} or {commit_error}")
    for s in sub.choices.values():
        s.add_argument("--access-key", default="", help="sign requests as this user")
        s.add_argument("--secret-key", default="")
        s.add_argument("--tls", action="store_true",
                       help="TLS, trusting the CAs in GRPC_DEFAULT_SSL_ROOTS_FILE_PATH (or the system's)")
    a = p.parse_args()
    {"send": send, "receive": receive, "push": push, "txsend": txsend}[a.cmd](a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
