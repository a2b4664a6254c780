"""The C++ Remoting client (librocketmq, bundled by PyPI `rocketmq` 0.4.4), unchanged.

`client.py send --namesrv H:P --topic T --count N` and `client.py consume --namesrv H:P --topic T
--group G --count N --timeout S` print one JSON line per message, like the other drivers.
"""
import argparse
import json
import sys
import threading
import time

from rocketmq.client import Message, Producer, PushConsumer

LOCK = threading.Lock()


def emit(d):
    with LOCK:
        sys.stdout.write(json.dumps(d) + "\n")
        sys.stdout.flush()


def send(a):
    p = Producer(a.group)
    p.set_namesrv_addr(a.namesrv)
    p.start()
    try:
        for i in range(a.count):
            m = Message(a.topic)
            m.set_body(f"cpp-{i}")
            m.set_tags("TagC")
            m.set_keys(f"ck-{i}")
            m.set_property("index", str(i))
            r = p.send_sync(m)
            emit({"id": r.msg_id, "status": int(r.status), "offset": r.offset})
    except Exception as e:
        emit({"error": str(e)})
        raise
    finally:
        p.shutdown()


def consume(a):
    seen = set()
    done = threading.Event()

    def on_message(m):
        with LOCK:
            seen.add(m.id)
            if len(seen) >= a.count:
                done.set()
        text = lambda v: v.decode() if isinstance(v, bytes) else (v or "")  # noqa: E731
        emit({"id": m.id, "body": text(m.body), "tags": text(m.tags), "index": text(m.get_property("index"))})

    c = PushConsumer(a.group)
    c.set_namesrv_addr(a.namesrv)
    c.subscribe(a.topic, on_message)
    c.start()
    done.wait(a.timeout)
    c.shutdown()
    emit({"received": len(seen)})


def main():
    p = argparse.ArgumentParser()
    p.add_argument("cmd", choices=["send", "consume"])
    p.add_argument("--namesrv", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--group", default="e2e-cpp")
    p.add_argument("--count", type=int, default=10)
    p.add_argument("--timeout", type=float, default=60)
    a = p.parse_args()
    {"send": send, "consume": consume}[a.cmd](a)


if __name__ == "__main__":
    main()
