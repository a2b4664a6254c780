"""The differential suite: each test body runs against Ferrocket and against Apache RocketMQ 5.3.3
(the `target` fixture) with the same official clients, and asserts RocketMQ's behaviour. Where
Ferrocket differs on purpose, `differs(entry, target, rocketmq=..., ferrocket=...)` names the entry
of docs/COMPATIBILITY.md that says why; an entry missing there fails the test, and an entry no test
exercises fails `test_every_compatibility_entry_is_exercised`.

gRPC: the Python client (rocketmq-python-client 5.1.2), the Java client (rocketmq-client-java
5.0.8) and the Go client (rocketmq-clients/golang/v5 v5.1.4), the last two with TLS on as by
default. Remoting: the Java client rocketmq-client 5.3.3 through the target's
nameserver. Administration: RocketMQ's own mqadmin against both.
"""
import pathlib
import re
import subprocess

import pytest

from conftest import Background, client_args, java, java_cmd, run_client, wait_for
import rocketmq
from rocketmq import mqadmin

COMPAT = pathlib.Path(__file__).resolve().parents[2] / "docs" / "COMPATIBILITY.md"
GRPC_CLIENTS = ["python", "java", "go"]


def compat_entries():
    """The entry ids of docs/COMPATIBILITY.md: its `- **id**:` lines."""
    return re.findall(r"^- \*\*([a-z0-9-]+)\*\*", COMPAT.read_text(), re.M)


def differs(entry, target, rocketmq, ferrocket):
    """What `target` is expected to do where the two differ for the reason in COMPATIBILITY.md's `entry`."""
    assert entry in compat_entries(), f"difference {entry!r} is not listed in {COMPAT}"
    return rocketmq if target.name == "rocketmq" else ferrocket


def stored(target, topic):
    """Messages stored in `topic` (sum over its queues of max - min offset); 0 without a route."""
    return sum(high - low for low, high in target.queue_ranges(topic) or [])


def run_client_raw(kind, cmd, target, **opts):
    """Runs one client driver command whatever its exit: the CompletedProcess, for refusals."""
    return subprocess.run(client_args(kind, cmd, target, **opts), capture_output=True, text=True, timeout=120)


def by_id(rows):
    return {r["id"]: r for r in rows if "id" in r}


def test_every_compatibility_entry_is_exercised():
    used = set(re.findall(r'differs\(\s*"([a-z0-9-]+)"', pathlib.Path(__file__).read_text()))
    listed = compat_entries()
    assert listed, f"{COMPAT} lists no entry"
    assert sorted(set(listed) - used) == [], "entries of COMPATIBILITY.md that no test shows"


# ---- gRPC ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("client", GRPC_CLIENTS)
def test_round_trip_keeps_id_tag_keys_body_and_properties(target, names, client):
    topic = names("t")
    target.create_topic(topic)
    sent = run_client(client, "send", target, topic=topic, count=10, tag="TagR", key_prefix="k")
    got = by_id(run_client(client, "receive", target, topic=topic, group=names("g"), count=10, timeout=40))
    assert sorted(got) == sorted(r["id"] for r in sent)
    for s in sent:
        r = got[s["id"]]
        i = s["body"].rsplit("-", 1)[1]
        assert (r["tag"], r["keys"], r["body"], r["attempt"]) == ("TagR", [f"k-{i}"], s["body"], 1)
        assert {k: r["props"].get(k) for k in ("origin", "i", "color")} == \
            {"origin": client, "i": i, "color": ("red", "green", "blue")[int(i) % 3]}


def test_an_unacknowledged_message_comes_back_after_its_invisible_time_as_attempt_2(target, names):
    topic, group = names("t"), names("g")
    target.create_topic(topic)
    sent = {r["id"] for r in run_client("python", "send", target, topic=topic, count=3)}
    first = run_client("python", "receive", target, topic=topic, group=group, count=3, invisible=10, ack=False,
                       timeout=40)
    again = run_client("python", "receive", target, topic=topic, group=group, count=3, invisible=10, timeout=40)
    assert set(by_id(first)) == set(by_id(again)) == sent
    assert {r["attempt"] for r in first} == {1} and {r["attempt"] for r in again} == {2}
    seen = {r["id"]: r["t"] for r in first}
    assert min(r["t"] - seen[r["id"]] for r in again) >= 9.0, "not before the 10 s invisible time ran out"


def test_an_invisible_time_under_10_s_is_refused(target, names):
    topic = names("t")
    target.create_topic(topic)
    run_client("python", "send", target, topic=topic, count=1)
    p = run_client_raw("python", "receive", target, topic=topic, group=names("g"), count=1, invisible=5, timeout=20)
    assert p.returncode != 0 and "invisible" in p.stderr.lower(), p.stderr[-2000:]


def test_a_tag_filter_delivers_only_its_tags(target, names):
    topic = names("t")
    target.create_topic(topic)
    a = {r["id"] for r in run_client("python", "send", target, topic=topic, count=6, tag="TagA")}
    run_client("python", "send", target, topic=topic, count=6, tag="TagB")
    c = {r["id"] for r in run_client("python", "send", target, topic=topic, count=3, tag="TagC")}
    got = run_client("python", "receive", target, topic=topic, group=names("g"), filter="TagA || TagC", count=9,
                     timeout=40)
    assert set(by_id(got)) == a | c and len(got) == 9


def test_a_sql92_filter_matches_on_properties(target, names):
    topic = names("t")
    target.create_topic(topic)
    sent = run_client("python", "send", target, topic=topic, count=12)
    want = {r["id"] for r in sent if int(r["body"].rsplit("-", 1)[1]) % 3 == 0}  # color = 'red'
    got = run_client("python", "receive", target, topic=topic, group=names("g"), filter="color = 'red' AND origin IS NOT NULL",
                     sql=True, count=len(want), timeout=40)
    assert set(by_id(got)) == want and {r["props"]["color"] for r in got} == {"red"}


def test_fifo_delivers_each_message_group_in_send_order(target, names):
    topic, group = names("t"), names("g")
    target.create_topic(topic, message_type="FIFO")
    target.create_group(group, fifo=True)
    sent = run_client("python", "send", target, topic=topic, count=30, message_groups=3)
    got = run_client("python", "receive", target, topic=topic, group=group, count=30, timeout=60)
    assert sorted(by_id(got)) == sorted(r["id"] for r in sent)
    for g in ("group-0", "group-1", "group-2"):
        assert [r["id"] for r in got if r.get("group") == g] == [r["id"] for r in sent if r.get("group") == g]


@pytest.mark.parametrize("client", ["java", "go"])
def test_a_fifo_or_delay_message_to_a_normal_topic_is_refused_by_the_client(target, names, client):
    topic = names("t")
    target.create_topic(topic)
    for kind in ({"message_groups": 1}, {"delay": 5}):
        p = run_client_raw(client, "send", target, topic=topic, count=1, **kind)
        assert p.returncode != 0 and "message type" in p.stderr.lower(), p.stderr[-2000:]


def test_a_delay_message_arrives_when_due_and_a_recalled_one_never(target, names):
    topic = names("t")
    target.create_topic(topic, message_type="DELAY")
    sent = [r for r in run_client("python", "send", target, topic=topic, count=3, delay=4, recall_first=1)
            if "id" in r]
    got = by_id(run_client("python", "receive", target, topic=topic, group=names("g"), count=2, timeout=40))
    assert sorted(got) == sorted(r["id"] for r in sent[1:]), "the recalled first message is not delivered"
    for s in sent[1:]:
        late = got[s["id"]]["t"] - s["due"]
        assert -0.2 <= late <= 2.5, f"arrived {late:.2f} s after it was due"


def test_after_its_max_attempts_a_message_goes_to_the_dlq(target, names):
    topic, group = names("t"), names("g")
    target.create_topic(topic)
    target.create_group(group, max_attempts=2)
    sent = {r["id"] for r in run_client("python", "send", target, topic=topic, count=2)}
    rows = run_client("python", "receive", target, topic=topic, group=group, count=100, invisible=10, ack=False,
                      timeout=35)
    assert sorted((r["id"], r["attempt"]) for r in rows) == sorted((i, a) for i in sent for a in (1, 2))
    wait_for(lambda: stored(target, f"%DLQ%{group}") == 2, 90, "both messages in the DLQ")


def test_a_failed_push_is_redelivered_after_the_groups_backoff(target, names):
    topic = names("t")
    target.create_topic(topic)
    run_client("python", "send", target, topic=topic, count=4)
    rows = run_client("python", "push", target, topic=topic, group=names("g"), count=2, fail_every=2,
                      until_attempts=2, timeout=60)
    # The group's default retry policy backs the first retry off 10 s on both (RocketMQ's
    # CustomizedRetryPolicy, index reconsumeTimes + 2); when it arrives differs.
    latest = differs("held-receive-wakes-for-retry", target, rocketmq=21, ferrocket=12)
    for body in ("body-0", "body-2"):
        mine = [r for r in rows if r["body"] == body]
        assert mine and mine[0]["attempt"] == 1 and mine[0]["result"] == "failure", mine
        if target.name == "rocketmq" and len(mine) < 2:
            # Seen in two clean-clone CI runs, never in isolation: the reference did not
            # redeliver the failed message at all within 60 s (COMPATIBILITY.md).
            pytest.xfail(f"Apache RocketMQ did not redeliver {body} within 60 s")
        assert [r["attempt"] for r in mine[:2]] == [1, 2], mine
        gap = mine[1]["t"] - mine[0]["t"]
        assert 9.5 <= gap <= latest, f"redelivered {gap:.1f} s after the failure"


@pytest.mark.parametrize("client", GRPC_CLIENTS)
def test_transactions_commit_roll_back_and_each_check_back_answer(target, names, client):
    topic = names("t")
    target.create_topic(topic, message_type="TRANSACTION")
    committed = [r["id"] for r in run_client(client, "txsend", target, topic=topic, count=2, action="commit")]
    run_client(client, "txsend", target, topic=topic, count=1, action="rollback", body_prefix="rolled-back")
    rows = run_client(client, "txsend", target, topic=topic, count=1, action="none", checker="commit", until_checked=1,
                      hold=60, body_prefix="checked")
    checked = [r["id"] for r in rows if "id" in r]
    checks = [r["check"] for r in rows if "check" in r]
    assert set(checked) <= set(checks), "the open transaction is checked back, by message id"
    ended = sorted(set(checks) - set(checked))
    if ended:  # transactions earlier producers committed or rolled back
        assert differs("check-back-of-an-ended-transaction", target, rocketmq=True, ferrocket=False), ended
    rows = run_client(client, "txsend", target, topic=topic, count=1, action="none", checker="rollback",
                      until_checked=1, hold=60, body_prefix="checked-rollback")
    assert any("check" in r for r in rows)
    got = run_client("python", "receive", target, topic=topic, group=names("g"), count=3, timeout=30)
    assert sorted(by_id(got)) == sorted(committed + checked)


def test_a_grpc_send_to_a_topic_nobody_created(target, names):
    p = run_client_raw("python", "send", target, topic=names("t"), count=1)
    ok = differs("grpc-topic-auto-create", target, rocketmq=False, ferrocket=True)
    assert (p.returncode == 0) == ok, p.stderr[-2000:]


# ---- Remoting --------------------------------------------------------------------------------------

def test_remoting_push_round_trip_and_consumer_offsets(target, names):
    topic, group = names("t"), names("g")
    target.create_topic(topic)
    sent = java("Producer", namesrv=target.namesrv, topic=topic, count=20, tag="TagJ", keys="jk-")[:-1]
    rows = java("PushConsumer", namesrv=target.namesrv, topic=topic, group=group, expect=20, timeout=60)[:-1]
    got = by_id(rows)
    assert sorted(got) == sorted(r["id"] for r in sent)
    for r in got.values():
        i = r["body"].rsplit("-", 1)[1]
        assert (r["tags"], r["keys"], r["reconsumeTimes"]) == ("TagJ", f"jk-{i}", 0)
    progress = mqadmin(target.namesrv, "consumerProgress", "-g", group)
    assert re.search(r"Diff Total:\s*0\b", progress), progress


def test_remoting_reconsume_later_goes_through_the_retry_topic_to_the_dlq(target, names):
    topic, group = names("t"), names("g")
    target.create_topic(topic)
    sent = [r["id"] for r in java("Producer", namesrv=target.namesrv, topic=topic, count=2)[:-1]]
    rows = java("PushConsumer", namesrv=target.namesrv, topic=topic, group=group, fail=100, max_reconsume=1,
                until_deliveries=4, poll_namesrv_ms=1000, timeout=90)[:-1]
    for id in sent:
        mine = [r for r in rows if r["id"] == id]
        assert [r["reconsumeTimes"] for r in mine] == [0, 1], mine
        # Delay level 3 (10 s) for the first retry, seen after about 20 s on both: the retry topic
        # of a new group is routed once the consumer's first heartbeat created it, so the client
        # takes its queues only at its next rebalance (every 20 s).
        assert 9_000 <= mine[1]["at"] - mine[0]["at"] <= 25_000, "delay level 3 (10 s) for the first retry"
    wait_for(lambda: stored(target, f"%DLQ%{group}") == 2, 90, "both messages in the DLQ")


def test_remoting_delay_level_3_arrives_ten_seconds_after_the_send(target, names):
    topic, group = names("t"), names("g")
    target.create_topic(topic)
    consumer = Background(java_cmd("PushConsumer", namesrv=target.namesrv, topic=topic, group=group, expect=2,
                                   timeout=90))
    java("Producer", namesrv=target.namesrv, topic=topic, count=1, body="warm-up")
    wait_for(lambda: any(r.get("body") == "warm-up-0" for r in consumer.rows), 60, "the consumer to be consuming")
    sent = java("Producer", namesrv=target.namesrv, topic=topic, count=1, delay_level=3, body="delayed")[0]
    got = next(r for r in consumer.wait(90) if r.get("id") == sent["id"])
    late = got["at"] - sent["sentAt"]  # sentAt is taken before the send, so the store time is not earlier
    assert 10_000 <= late <= 11_000, f"delay level 3 (10 s) arrived after {late} ms"


def test_remoting_transactions_commit_roll_back_and_are_checked_back(target, names):
    topic, ns = names("t"), target.namesrv
    target.create_topic(topic, message_type="TRANSACTION")
    committed = [r["id"] for r in java("TxProducer", namesrv=ns, topic=topic, count=2, action="commit")[:-1]]
    java("TxProducer", namesrv=ns, topic=topic, count=1, action="rollback", body="rolled-back")
    # UNKNOW at first: the broker checks back over the producer group's connection.
    rows = java("TxProducer", namesrv=ns, topic=topic, count=2, action="unknown", checker="commit", until_checks=2,
                hold=60, body="checked")
    checked = [r["id"] for r in rows if "id" in r]
    assert sorted(r["checked"] for r in rows if "checked" in r) == sorted(checked)
    rows = java("TxProducer", namesrv=ns, topic=topic, count=1, action="unknown", checker="rollback", until_checks=1,
                hold=60, body="checked-rollback")
    assert rows[-1]["checks"] >= 1
    got = java("PushConsumer", namesrv=ns, topic=topic, group=names("g"), expect=4, timeout=60)[:-1]
    assert sorted(r["id"] for r in got) == sorted(committed + checked)
    assert not any(r["body"].startswith(("rolled-back", "checked-rollback")) for r in got)


def test_remoting_orderly_consumer_keeps_queue_order_through_a_failure(target, names):
    topic = names("t")
    target.create_topic(topic)
    java("Producer", namesrv=target.namesrv, topic=topic, count=40)
    rows = java("OrderlyConsumer", namesrv=target.namesrv, topic=topic, group=names("g"), expect=40, fail_index=5,
                timeout=60)
    assert rows[-1]["received"] == 40
    per_queue = {}
    for r in rows[:-1]:
        per_queue.setdefault(r["queue"], []).append(r["offset"])
    for q, offsets in per_queue.items():
        assert offsets == sorted(offsets), f"queue {q} out of order: {offsets}"
    assert [r["index"] for r in rows[:-1]].count("5") == 2, "the failed message came again, before the next"


@pytest.mark.parametrize("mode", ["subscribe", "assign"])
def test_remoting_lite_pull_consumer(target, names, mode):
    topic = names("t")
    target.create_topic(topic)
    sent = [r["id"] for r in java("Producer", namesrv=target.namesrv, topic=topic, count=50)[:-1]]
    rows = java("LitePullConsumer", namesrv=target.namesrv, topic=topic, group=names("g"), mode=mode, expect=50,
                timeout=60)
    # Each pass gets every message exactly once: a duplicate would be a pull answered twice or a
    # next offset behind what was delivered. Assign mode's second pass comes after seekToBegin.
    for p in [1, 2] if mode == "assign" else [1]:
        assert sorted(r["id"] for r in rows[:-1] if r["pass"] == p) == sorted(sent), f"pass {p}"
    assert rows[-1]["received"] == 50


def test_remoting_broadcasting_consumers_each_get_every_message(target, names):
    # A new broadcasting consumer starts at the end of each queue (its offsets are its own, and
    # CONSUME_FROM_LAST_OFFSET): warm up until both consume, then send.
    topic, group = names("t"), names("g")
    target.create_topic(topic)
    consumers = [Background(java_cmd("PushConsumer", namesrv=target.namesrv, topic=topic, group=group,
                                     broadcast="true", expect=10_000, timeout=120)) for _ in range(2)]
    try:
        def warm():
            java("Producer", namesrv=target.namesrv, topic=topic, count=1, body="warm-up")
            return all(any(r.get("body") == "warm-up-0" for r in c.rows) for c in consumers)
        wait_for(warm, 60, "both broadcasting consumers to consume")
        sent = {r["id"] for r in java("Producer", namesrv=target.namesrv, topic=topic, count=20)[:-1]}
        for c in consumers:
            wait_for(lambda: sent <= {r.get("id") for r in c.rows}, 60, "every message at each consumer")
    finally:
        for c in consumers:
            c.proc.kill()
            c.proc.wait(10)


def test_a_topic_typed_by_mqadmin_refuses_other_types_at_the_grpc_client(target, names):
    topic = names("t")
    cluster = "DefaultCluster" if target.name == "ferrocket" else rocketmq.CLUSTER
    mqadmin(target.namesrv, "updateTopic", "-c", cluster, "-t", topic, "-r", "2", "-w", "2",
            "-a", "+message.type=FIFO")
    wait_for(lambda: rocketmq.route_code(target.namesrv, topic) == 0, 30, "the topic to be routed")
    p = run_client_raw("java", "send", target, topic=topic, count=1)
    assert p.returncode != 0 and "message type" in p.stderr.lower(), p.stderr[-2000:]
    sent = run_client("java", "send", target, topic=topic, count=2, message_groups=1)
    assert len(sent) == 2


def test_mqadmin_finds_a_message_by_key_and_by_id(target, names):
    topic = names("t")
    target.create_topic(topic)
    sent = java("Producer", namesrv=target.namesrv, topic=topic, count=5, keys="findme-")[:-1]
    want = sent[3]["id"]
    out = wait_for(lambda: (o := mqadmin(target.namesrv, "queryMsgByKey", "-t", topic, "-k", "findme-3",
                                         check=False)) and want in o and o, 30, "the key to be indexed")
    assert want in out
    out = mqadmin(target.namesrv, "queryMsgByUniqueKey", "-t", topic, "-i", want)
    assert "findme-3" in out and topic in out, out
