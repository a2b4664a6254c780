"""The official RocketMQ 5.x clients (Python, Node.js, Rust 5.0.0) against a real standalone broker."""
import itertools
import uuid

import pytest

from conftest import ALL_CLIENTS, run_client


def unique(prefix):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_hundred_messages_round_trip_and_none_redelivered_after_ack(broker, kind):
    topic, group = unique("t"), unique("g")
    sent = run_client(kind, "send", broker, topic=topic, count=100, tag="TagA", key_prefix="k", body_prefix="b")
    assert len(sent) == 100
    assert len({m["id"] for m in sent}) == 100
    got = run_client(kind, "receive", broker, topic=topic, group=group, count=100, invisible=2, timeout=60)
    assert sorted(m["id"] for m in got) == sorted(m["id"] for m in sent)
    by_id = {m["id"]: m for m in sent}
    for m in got:
        assert m["body"] == by_id[m["id"]]["body"]
        assert m["tag"] == "TagA"
        assert m["keys"] == by_id[m["id"]]["keys"]
        assert m["attempt"] == 1
    # Acked messages never come back, even well past their 2 s invisible time.
    again = run_client(kind, "receive", broker, topic=topic, group=group, count=1, invisible=2, poll=2, timeout=5)
    assert again == []


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_unacked_message_comes_back_after_its_invisible_time_with_attempt_2(broker, kind):
    topic, group = unique("t"), unique("g")
    [sent] = run_client(kind, "send", broker, topic=topic, count=1)
    [first] = run_client(kind, "receive", broker, topic=topic, group=group, count=1, invisible=2, ack=False, timeout=30)
    assert (first["id"], first["attempt"]) == (sent["id"], 1)
    [second] = run_client(kind, "receive", broker, topic=topic, group=group, count=1, invisible=2, timeout=30)
    assert (second["id"], second["attempt"]) == (sent["id"], 2)


@pytest.mark.parametrize("producer,consumer", [p for p in itertools.permutations(ALL_CLIENTS, 2)])
def test_messages_cross_between_clients(broker, producer, consumer):
    topic, group = unique("t"), unique("g")
    sent = run_client(producer, "send", broker, topic=topic, count=10, tag="Cross")
    got = run_client(consumer, "receive", broker, topic=topic, group=group, count=10, timeout=60)
    assert sorted((m["id"], m["body"], m["tag"]) for m in got) == sorted((m["id"], m["body"], "Cross") for m in sent)


@pytest.mark.parametrize("kind", ALL_CLIENTS)
def test_tag_filter_delivers_only_matching_messages(broker, kind):
    topic, group = unique("t"), unique("g")
    a = run_client(kind, "send", broker, topic=topic, count=5, tag="A")
    run_client(kind, "send", broker, topic=topic, count=5, tag="B")
    c = run_client(kind, "send", broker, topic=topic, count=5, tag="C")
    got = run_client(kind, "receive", broker, topic=topic, group=group, count=10, filter="A||C", timeout=60)
    assert sorted(m["id"] for m in got) == sorted(m["id"] for m in a + c)
    more = run_client(kind, "receive", broker, topic=topic, group=group, count=1, filter="A||C", poll=1, timeout=3)
    assert more == []


def test_python_push_consumer_receives_every_message_once(broker):
    """PushConsumer: QueryAssignment, then auto-renewed long polls; the client acks after its listener."""
    topic, group = unique("t"), unique("g")
    sent = run_client("node", "send", broker, topic=topic, count=50)
    got = run_client("python", "push", broker, topic=topic, group=group, count=50, timeout=60)
    assert sorted(m["id"] for m in got) == sorted(m["id"] for m in sent)
    assert all(m["attempt"] == 1 for m in got)
    # Acked by the push consumer: a simple consumer of the same group finds nothing left.
    assert run_client("python", "receive", broker, topic=topic, group=group, count=1, poll=1, timeout=3) == []
