"""Runs the order-inventory story against a real `ferrocket standalone` with faults injected, and
checks that orders and inventory agree at the end. Run it with the Python that has
rocketmq-python-client installed (e2e/clients/python/.venv/bin/python run.py); it exits 0 and
prints "consistent" if they agree.

1. Order service A creates orders 1..20; 5 and 13 fail locally (rolled back); it is killed right
   after order 20's local commit, before EndTransaction.
2. Order service B creates orders 21..80 (42 fails); the broker is killed with kill -9 after
   B's tenth order and restarted.
3. Order service C, a fresh process that creates nothing, answers the check-backs of every
   transaction still open (order 20's among them) until none is left.
4. The inventory service is killed after committing its fifth deduction and before acknowledging
   it; restarted, it gets that message again and recognises it.
5. Check: every order in the order database is deducted exactly once and nothing else is.
"""
import json
import os
import pathlib
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = os.environ.get("FERROCKET_BIN", str(ROOT / "target" / "release" / "ferrocket"))
PY = sys.executable
INITIAL_STOCK = 1000


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    def __init__(self, data):
        self.endpoint = f"127.0.0.1:{free_port()}"
        self.data = data
        self.env = {**os.environ, "FERROCKET_FLUSH_DISK_TYPE": "sync", "FERROCKET_TRANSACTION_TIMEOUT_MS": "2000",
                    "FERROCKET_TRANSACTION_CHECK_INTERVAL_MS": "2000", "FERROCKET_MIN_INVISIBLE_MS": "1000"}

    def start(self):
        self.proc = subprocess.Popen([BIN, "standalone", "--listen", self.endpoint, "--data-dir", str(self.data)],
                                     stdout=subprocess.PIPE, stderr=open(self.data.parent / "broker.log", "ab"),
                                     env=self.env, text=True)
        line = read_line_within(self.proc.stdout, 30)
        assert line.startswith("ready"), f"broker did not start: {line!r}"
        log("broker ready", self.endpoint)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        log("broker killed with kill -9")

    def open_transactions(self):
        out = subprocess.run([BIN, "tx", "list", "--server", self.endpoint, "--json"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
        return json.loads(out)["open"]


def read_line_within(stream, seconds):
    got = []
    t = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    t.start()
    t.join(seconds)
    return got[0] if got else ""


def log(*parts):
    print("[run]", *parts, flush=True)


def service(script, *args, **popen):
    return subprocess.Popen([PY, str(HERE / script), *map(str, args)], text=True, **popen)


def main():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="order-inventory-"))
    try:
        return run(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the broker's data dir: 1 GiB of preallocated CommitLog


def run(tmp):
    orders_db, inventory_db = tmp / "orders.db", tmp / "inventory.db"
    inv = sqlite3.connect(inventory_db, isolation_level=None)
    inv.execute("CREATE TABLE stock (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL)")
    inv.executemany("INSERT INTO stock VALUES (?, ?)", [(s, INITIAL_STOCK) for s in ("apple", "pear", "plum")])
    broker = Broker(tmp / "data")
    broker.start()
    try:
        log("1. order service A: orders 1..20, 5 and 13 fail, killed after order 20's local commit")
        a = service("order_service.py", "--endpoint", broker.endpoint, "--db", orders_db, "--first", 1, "--last", 20,
                    "--fail", "5,13", "--crash-after-local-commit", 20)
        assert a.wait(timeout=120) == 3, "order service A should have crashed on purpose"

        log("2. order service B: orders 21..80, 42 fails; the broker is killed mid-stream")
        b = service("order_service.py", "--endpoint", broker.endpoint, "--db", orders_db, "--first", 21, "--last", 80,
                    "--fail", "42", "--serve", 5, stdout=subprocess.PIPE)
        created = 0
        for line in b.stdout:
            print(line, end="", flush=True)
            created += '"created"' in line
            if created == 10:
                break
        broker.kill9()
        broker.start()
        for line in b.stdout:
            print(line, end="", flush=True)
        b.wait(timeout=300)

        log("3. order service C answers check-backs until no transaction is open")
        c = service("order_service.py", "--endpoint", broker.endpoint, "--db", orders_db, "--serve", 120)
        deadline = time.monotonic() + 120
        while broker.open_transactions() and time.monotonic() < deadline:
            time.sleep(0.5)
        c.terminate()
        c.wait(timeout=30)
        assert broker.open_transactions() == 0, "transactions still open"

        expected = sqlite3.connect(orders_db).execute("SELECT COUNT(*) FROM orders").fetchone()[0]
        log(f"4. inventory service: {expected} orders, killed after its fifth deduction, before the ack")
        first = service("inventory_service.py", "--endpoint", broker.endpoint, "--db", inventory_db, "--expect", expected,
                        "--crash-after-db-commit", 5)
        assert first.wait(timeout=120) == 3
        second = service("inventory_service.py", "--endpoint", broker.endpoint, "--db", inventory_db, "--expect", expected,
                         "--timeout", 90)
        assert second.wait(timeout=150) == 0, "inventory service did not process every order"
    finally:
        broker.proc.terminate()
        broker.proc.wait(timeout=30)

    log("5. checking")
    orders = {i: (s, q) for i, s, q in sqlite3.connect(orders_db).execute("SELECT id, sku, qty FROM orders")}
    processed = {r[0] for r in inv.execute("SELECT order_id FROM processed")}
    stock = dict(inv.execute("SELECT sku, qty FROM stock"))
    want = {s: INITIAL_STOCK - sum(q for sku, q in orders.values() if sku == s) for s in stock}
    summary = {"orders": len(orders), "processed": len(processed), "stock": stock, "expected_stock": want,
               "failed_orders_absent": not ({5, 13, 42} & (set(orders) | processed)), "order_20_recovered": 20 in orders}
    print(json.dumps(summary))
    ok = set(orders) == processed and stock == want and summary["failed_orders_absent"] and summary["order_20_recovered"]
    print("consistent" if ok else "INCONSISTENT")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
