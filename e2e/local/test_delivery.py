"""Delivery semantics with the official clients: push consumers, retries with backoff, dead
letters, FIFO order, scheduled (DELAY) messages and recall, SQL92 filters, broadcast groups,
consumer lag and message query."""
import collections
import json
import subprocess

import pytest

from conftest import BIN, admin, cli, client_args, run_client, start_client, wait_for


def create_topic(broker, name, queues=4, types="normal"):
    cli(broker, "topic", "create", name, "--queues", str(queues), "--types", types)


@pytest.mark.parametrize("kind", ["python", "node"])
def test_push_consumer_gets_each_message_once_and_nothing_after_ack(broker, kind):
    create_topic(broker, "push")
    sent = run_client("python", "send", broker, topic="push", count=1000)
    got = run_client(kind, "push", broker, topic="push", group=f"push-{kind}", count=1000, timeout=120, linger=3)
    ids = [m["id"] for m in got]
    assert collections.Counter(ids) == collections.Counter(m["id"] for m in sent)  # exactly once
    assert {m["attempt"] for m in got} == {1}
    lag = admin(broker, "group", "lag", f"push-{kind}")
    assert lag["total_lag"] == 0


def test_failing_messages_retry_with_backoff_then_reach_the_dlq(broker):
    create_topic(broker, "retry")
    cli(broker, "group", "create", "retrying", "--max-delivery-attempts", "3", "--backoff", "1s,2s")
    sent = run_client("python", "send", broker, topic="retry", count=10)
    failing = {m["id"] for m in sent if int(m["body"].rsplit("-", 1)[1]) % 5 == 0}
    got = run_client("python", "push", broker, topic="retry", group="retrying", count=8, fail_every=5,
                     until_attempts=3, timeout=90)
    by_id = collections.defaultdict(list)
    for m in got:
        by_id[m["id"]].append(m)
    for mid in failing:
        calls = by_id[mid]
        assert [c["attempt"] for c in calls] == [1, 2, 3], calls
        # The n-th retry waits the n-th backoff (1 s, then 2 s), never less.
        for prev, nxt, backoff in zip(calls, calls[1:], (1.0, 2.0)):
            assert nxt["t"] - prev["t"] >= backoff - 0.05, (prev, nxt)
    assert all(len(by_id[m["id"]]) == 1 for m in sent if m["id"] not in failing)
    # After the last attempt failed they are on %DLQ%retrying, with their original ids and bodies.
    dlq = run_client("python", "receive", broker, topic="%DLQ%retrying", group="dlq-reader", count=2, timeout=60)
    assert {m["id"] for m in dlq} == failing
    assert {m["body"] for m in dlq} == {m["body"] for m in sent if m["id"] in failing}
    assert all(m["props"].get("origin") == "python" for m in dlq)
    info = admin(broker, "group", "describe", "retrying")
    assert info["dlq_topic"] == "%DLQ%retrying" and info["retry_topic"] == "%RETRY%retrying"
    assert info["group"]["max_delivery_attempts"] == 3


# Both ConsumeQueue stores: the FIFO gate reads each message's group from the store's entries.
@pytest.mark.parametrize("store", ["files", "lsm"])
def test_fifo_group_keeps_order_per_message_group_despite_failures(broker_factory, store):
    broker = broker_factory(consume_queue_store=store)
    create_topic(broker, "fifo", queues=2, types="fifo")
    cli(broker, "group", "create", "ordered", "--fifo", "--max-delivery-attempts", "6", "--backoff", "200ms")
    sent = run_client("python", "send", broker, topic="fifo", count=150, message_groups=3)
    got = run_client("python", "push", broker, topic="fifo", group="ordered", count=150, fail_rate=0.05, timeout=120)
    per_group = collections.defaultdict(list)
    for m in got:
        per_group[m["group"]].append((int(m["body"].rsplit("-", 1)[1]), m["result"]))
    assert len(per_group) == 3
    assert any(r == "failure" for calls in per_group.values() for _, r in calls), "no failure was injected"
    for g, calls in per_group.items():
        indexes = [i for i, _ in calls]
        assert indexes == sorted(indexes), f"{g} out of order: {indexes}"
        done = [i for i, r in calls if r == "success"]
        assert done == [int(m["body"].rsplit("-", 1)[1]) for m in sent if m["group"] == g]


def test_delayed_messages_arrive_on_time(broker):
    create_topic(broker, "delay", types="delay")
    sent = run_client("python", "send", broker, topic="delay", count=20, delay=3)
    got = run_client("python", "receive", broker, topic="delay", group="g", count=20, timeout=30)
    assert {m["id"] for m in got} == {m["id"] for m in sent}
    due = {m["id"]: m["due"] for m in sent}
    for m in got:
        assert m["t"] >= due[m["id"]], "delivered before it was due"
        assert m["t"] <= due[m["id"]] + 1.0, f"{m['t'] - due[m['id']]:.2f}s late"
        assert m["due_ms"] == due[m["id"]] * 1000


def test_recalled_message_is_never_delivered(broker):
    create_topic(broker, "recall", types="delay")
    sent = run_client("python", "send", broker, topic="recall", count=3, delay=2, recall_first=1)
    recalled = [m["recalled"] for m in sent if "recalled" in m]
    ids = [m["id"] for m in sent if "id" in m]
    assert recalled == [ids[0]]
    got = run_client("python", "receive", broker, topic="recall", group="g", count=2, timeout=30)
    assert {m["id"] for m in got} == set(ids[1:])
    assert run_client("python", "receive", broker, topic="recall", group="g", count=1, poll=3, timeout=4) == []


def test_rust_client_delayed_messages_reach_python_on_time(broker):
    create_topic(broker, "rdelay", types="delay")
    sent = run_client("rust", "send", broker, topic="rdelay", count=5, delay=2)
    got = run_client("python", "receive", broker, topic="rdelay", group="g", count=5, timeout=30)
    assert {m["id"] for m in got} == {m["id"] for m in sent}
    for m in got:
        assert m["t"] * 1000 >= m["due_ms"] and m["t"] * 1000 <= m["due_ms"] + 1000


def test_scheduled_messages_survive_kill9(broker_factory):
    b = broker_factory()
    create_topic(b, "sched", types="delay")
    sent = run_client("python", "send", b, topic="sched", count=1000, delay=12)
    b.kill9()
    b.start()
    got = run_client("python", "receive", b, topic="sched", group="g", count=1000, invisible=60, timeout=90)
    assert collections.Counter(m["id"] for m in got) == collections.Counter(m["id"] for m in sent)
    due = {m["id"]: m["due"] for m in sent}
    assert all(m["t"] >= due[m["id"]] for m in got)


def test_sql92_filter_selects_exactly_the_matching_messages(broker):
    create_topic(broker, "sql")
    run_client("python", "send", broker, topic="sql", count=30)
    expr = "color = 'red' AND i >= 10 AND i NOT IN (15) AND origin IS NOT NULL"
    got = run_client("python", "receive", broker, topic="sql", group="g", count=5, filter=expr, sql=True, timeout=30)
    assert sorted(int(m["props"]["i"]) for m in got) == [12, 18, 21, 24, 27]
    assert run_client("python", "receive", broker, topic="sql", group="g", count=1, filter=expr, sql=True, poll=1,
                      timeout=3) == []
    args = client_args("python", "receive", broker, topic="sql", group="g2", count=1, filter="color = ", sql=True,
                       timeout=5)
    bad = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "invalid SQL92 filter" in bad.stderr, bad.stderr[-2000:]


def test_broadcast_group_delivers_every_message_to_every_client(broker):
    create_topic(broker, "bcast")
    cli(broker, "group", "create", "everyone", "--broadcast")
    consumers = [start_client("python", "receive", broker, topic="bcast", group="everyone", count=10, poll=1,
                              timeout=60) for _ in range(2)]
    # Each new client of a broadcast group starts at the end of the queues, once the broker knows it.
    wait_for(lambda: len(admin(broker, "group", "describe", "everyone")["broadcast_clients"]) == 2, 30,
             "both broadcast clients to poll")
    sent = run_client("python", "send", broker, topic="bcast", count=10)
    for c in consumers:
        out, err = c.communicate(timeout=90)
        assert c.returncode == 0, err[-2000:]
        assert {json.loads(line)["id"] for line in out.splitlines()} == {m["id"] for m in sent}


def test_message_query_and_lag_show_delivery_state(broker):
    create_topic(broker, "query")
    sent = run_client("python", "send", broker, topic="query", count=4, key_prefix="order")
    run_client("python", "receive", broker, topic="query", group="q", count=2, timeout=30)
    lag = admin(broker, "group", "lag", "q")
    assert lag["total_lag"] == 2
    acked = [m for m in sent if any(s == "acked" for s in get_states(broker, m["id"]).values())]
    assert len(acked) == 2
    [found] = [json.loads(line) for line in subprocess.run(
        [str(BIN), "message", "query", "--topic", "query", "--key", "order-3", "--server", broker.endpoint, "--json"],
        capture_output=True, text=True, check=True, timeout=30).stdout.splitlines()]
    assert found["message_id"] == sent[3]["id"] and found["body"] == sent[3]["body"]
    assert found["properties"]["origin"] == "python" and found["store_timestamp_ms"] > 0


def get_states(broker, message_id):
    return admin(broker, "message", "get", "--id", message_id)["delivery"]
