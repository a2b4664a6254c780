"""Inventory service: deducts stock for each created order, exactly once per order although
delivery is at least once: the deduction and the record of the processed order id commit in one
SQLite transaction, and a redelivered order is recognised and only acknowledged.

Fault injection: --crash-after-db-commit N exits abruptly after the N-th deduction is committed
and before its message is acknowledged, so that message is delivered again.
"""
import argparse
import json
import os
import sqlite3
import sys
import time

from rocketmq import ClientConfiguration, Credentials, FilterExpression, SimpleConsumer


def db(path):
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    conn.execute("CREATE TABLE IF NOT EXISTS stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL)")
    conn.execute("CREATE TABLE IF NOT EXISTS processed (order_id INTEGER PRIMARY KEY)")
    return conn


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--topic", default="orders")
    p.add_argument("--group", default="inventory")
    p.add_argument("--expect", type=int, required=True, help="stop once this many orders are processed")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("--crash-after-db-commit", type=int, default=0)
    a = p.parse_args()
    conn = db(a.db)
    consumer = SimpleConsumer(ClientConfiguration(a.endpoint, Credentials(), request_timeout=5), a.group,
                              {a.topic: FilterExpression("order-created")}, await_duration=2)
    consumer.startup()
    done = lambda: conn.execute("SELECT COUNT(*) FROM processed").fetchone()[0]  # noqa: E731
    deducted = 0
    deadline = time.monotonic() + a.timeout
    while done() < a.expect and time.monotonic() < deadline:
        for m in consumer.receive(16, 5) or []:
            order = json.loads(m.body)
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("SELECT 1 FROM processed WHERE order_id = ?", (order["order_id"],)).fetchone():
                conn.execute("ROLLBACK")
                print(json.dumps({"order": order["order_id"], "result": "duplicate delivery ignored"}), flush=True)
            else:
                conn.execute("UPDATE stock SET qty = qty - ? WHERE sku = ?", (order["qty"], order["sku"]))
                conn.execute("INSERT INTO processed (order_id) VALUES (?)", (order["order_id"],))
                conn.execute("COMMIT")
                deducted += 1
                print(json.dumps({"order": order["order_id"], "result": "stock deducted"}), flush=True)
                if deducted == a.crash_after_db_commit:
                    print(json.dumps({"result": "crashing before ack"}), flush=True)
                    os._exit(3)
            consumer.ack(m)
    consumer.shutdown()
    return 0 if done() >= a.expect else 1


if __name__ == "__main__":
    sys.exit(main())
