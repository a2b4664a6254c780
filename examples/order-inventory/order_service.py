"""Order service: creates orders with a transactional message (the official RocketMQ Python client).

For each order: send a half message, write the order row to SQLite (the local transaction), then
commit the message, or roll it back if the local transaction failed. If the process dies between
its local commit and EndTransaction, the broker checks back later, and the checker answers from
the database: the order row exists -> COMMIT, else ROLLBACK. So a message is published if and
only if its order exists.

Fault injection: --crash-after-local-commit N exits abruptly right after order N's local commit.
"""
import argparse
import json
import os
import sqlite3
import sys
import threading
import time

from rocketmq import ClientConfiguration, Credentials, Message, Producer, TransactionChecker, TransactionResolution

SKUS = ("apple", "pear", "plum")


def db(path):
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, sku TEXT NOT NULL, qty INTEGER NOT NULL)")
    return conn


def order_of(order_id):
    return {"order_id": order_id, "sku": SKUS[order_id % len(SKUS)], "qty": 1 + order_id % 4}


class OrderChecker(TransactionChecker):
    """Answers check-backs from the order table: the source of truth for the local transaction."""

    def __init__(self, path):
        self.path, self.lock, self.answered = path, threading.Lock(), 0

    def check(self, message):
        order_id = int(message.properties["order_id"])
        exists = db(self.path).execute("SELECT 1 FROM orders WHERE id = ?", (order_id,)).fetchone() is not None
        with self.lock:
            self.answered += 1
        print(json.dumps({"check": order_id, "answer": "commit" if exists else "rollback"}), flush=True)
        return TransactionResolution.COMMIT if exists else TransactionResolution.ROLLBACK


def send_half(producer, m, order_id, retry_seconds):
    """Sends the half message, retrying while the broker is unreachable (at most `retry_seconds`).
    A retry may store a second half message for the same order if the first one's reply was lost;
    the checker commits that one too, so consumers must be idempotent (the inventory service is)."""
    deadline = time.monotonic() + retry_seconds
    while True:
        try:
            tx = producer.begin_transaction()
            producer.send(m, tx)  # the half message: stored, invisible
            return tx
        except Exception as e:
            if time.monotonic() >= deadline:
                print(json.dumps({"order": order_id, "result": "refused", "error": str(e)[:200]}), flush=True)
                return None
            print(json.dumps({"order": order_id, "result": "broker unavailable, retrying"}), flush=True)
            time.sleep(0.5)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--topic", default="orders")
    p.add_argument("--first", type=int, default=1)
    p.add_argument("--last", type=int, default=0, help="create orders first..last (none if last < first)")
    p.add_argument("--fail", default="", help="comma-separated order ids whose local transaction fails")
    p.add_argument("--crash-after-local-commit", type=int, default=0)
    p.add_argument("--serve", type=float, default=0, help="then stay up answering check-backs, s")
    p.add_argument("--retry-seconds", type=float, default=30, help="how long to retry a send the broker does not take")
    a = p.parse_args()
    failing = {int(x) for x in a.fail.split(",") if x}
    conn = db(a.db)
    checker = OrderChecker(a.db)
    producer = Producer(ClientConfiguration(a.endpoint, Credentials(), request_timeout=5), (a.topic,), checker)
    producer.startup()
    for order_id in range(a.first, a.last + 1):
        order = order_of(order_id)
        m = Message()
        m.topic = a.topic
        m.tag = "order-created"
        m.keys = f"order-{order_id}"
        m.add_property("order_id", str(order_id))
        m.body = json.dumps(order).encode()
        tx = send_half(producer, m, order_id, a.retry_seconds)
        if tx is None:  # broker unreachable: the order is refused, nothing was written locally
            continue
        try:
            if order_id in failing:
                raise RuntimeError("payment declined")
            conn.execute("INSERT INTO orders (id, sku, qty) VALUES (?, ?, ?)", (order_id, order["sku"], order["qty"]))
        except Exception as e:
            print(json.dumps({"order": order_id, "result": "failed", "error": str(e)}), flush=True)
            try:
                tx.rollback()
            except Exception:
                pass  # the broker asks again later; the checker finds no order and rolls back
            continue
        if order_id == a.crash_after_local_commit:
            print(json.dumps({"order": order_id, "result": "crashing before EndTransaction"}), flush=True)
            os._exit(3)
        try:
            tx.commit()
            print(json.dumps({"order": order_id, "result": "created"}), flush=True)
        except Exception as e:  # the broker checks back later and the checker commits
            print(json.dumps({"order": order_id, "result": "created, commit pending", "error": str(e)[:200]}), flush=True)
    deadline = time.monotonic() + a.serve
    while time.monotonic() < deadline:
        time.sleep(0.2)  # stay up: check-backs arrive on the client's own threads
    producer.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
