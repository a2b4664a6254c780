"""RocketMQ Remoting: the official Java client (`rocketmq-client` 5.3.3 and 4.9.8) and the Go
client (`rocketmq-client-go/v2`), unchanged, against real `ferrocket` processes: producers in
every send mode, push consumers with retries through `%RETRY%<group>` to `%DLQ%<group>`,
transactions with check-back, SYNC_FLUSH under `kill -9`, a nameserver routing to two broker groups, and messages crossing between
Remoting and gRPC clients with the same ids and properties.

The drivers are `e2e/clients/java` (built by its build.sh) and `e2e/clients/go`; each prints one
JSON line per message. Orderly and lite pull consumers, broadcasting and delay levels are in
e2e/reference/test_differential.py, which runs them against Ferrocket and Apache RocketMQ.
"""
import json
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, CLIENTS, Background, admin, client_args, java, java_cmd, jvm, lines, run_client, wait_for

GO = CLIENTS / "go" / "ferrocket-e2e-go"
# Built by scripts/test into the cache (its dependency tree takes minutes to build cold).
RUST = Path.home() / ".cache" / "ferrocket" / "rust-remoting" / "release" / "ferrocket-e2e-rust-remoting"
VERSIONS = ["5", "4"]
# Every delay level 1 s: retries in tests come after seconds, not minutes.
FAST_LEVELS = {"delay_levels": ["1s"] * 18}


def go(role, **opts):
    assert GO.exists(), "the Go driver is not built: go build in e2e/clients/go"
    return native(GO, role, **opts)


def rust(role, **opts):
    assert RUST.exists(), "the rocketmq-client-rust driver is not built: ./scripts/test builds it"
    return native(RUST, role, **opts)


def native(binary, role, **opts):
    """Runs a Go or Rust driver binary to its end; returns its JSON lines."""
    args = [str(binary), role]
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, f"{binary.name} {role} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return lines(p.stdout)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_send_mode_then_a_push_consumer_gets_each_message_once(broker, version):
    ns, topic = broker.namesrv, f"modes-{version}"
    sent = []
    for mode, n in [("sync", 300), ("async", 300), ("oneway", 100), ("batch", 300)]:
        rows = java("Producer", version, namesrv=ns, topic=topic, mode=mode, count=n, body=mode)
        assert rows[-1] == {"sent": n}, rows[-3:]
        sent += [r["id"] for r in rows[:-1]]
    assert len(set(sent)) == 1000
    rows = java("PushConsumer", version, namesrv=ns, topic=topic, group=f"g-{version}", expect=1000, timeout=120)
    got = [r["id"] for r in rows[:-1]]
    assert rows[-1]["received"] == 1000, rows[-1]
    assert sorted(got) == sorted(sent), "every message exactly once, by id"
    # The group's offsets reached the broker: nothing is left to consume.
    progress = admin(broker, "group", "describe", f"g-{version}")
    assert sum(q["lag"] for q in progress["queues"] if q["topic"] == topic) == 0, progress


def test_reconsume_later_goes_through_the_retry_topic_to_the_dlq(broker_factory):
    b = broker_factory(**FAST_LEVELS)
    sent = [r["id"] for r in java("Producer", namesrv=b.namesrv, topic="flaky", count=3)[:-1]]
    rows = java("PushConsumer", namesrv=b.namesrv, topic="flaky", group="flaky-g", fail=100, max_reconsume=2,
                until_deliveries=9, poll_namesrv_ms=1000, timeout=90)
    deliveries = rows[:-1]
    for id in sent:
        mine = [d for d in deliveries if d["id"] == id]
        assert [d["reconsumeTimes"] for d in mine] == [0, 1, 2], mine
        assert [d["topic"] for d in mine] == ["flaky"] * 3, "the client restores the topic of a retried message"
    # After maxReconsumeTimes the broker dead-letters it: readable from %DLQ%<group>.
    dlq = java("PushConsumer", namesrv=b.namesrv, topic="%DLQ%flaky-g", group="dlq-reader", expect=3, timeout=60)
    assert sorted(r["id"] for r in dlq[:-1]) == sorted(sent)
    assert {r["reconsumeTimes"] for r in dlq[:-1]} == {3}
    assert {r["props"].get("RETRY_TOPIC") for r in dlq[:-1]} == {"flaky"}
    topics = {q["topic"]: q for q in admin(b, "group", "describe", "flaky-g")["queues"]}
    assert topics["%RETRY%flaky-g"]["max_offset"] == 6, "two retry rounds of three messages went through %RETRY%"


def test_transactions_commit_roll_back_and_are_checked_back(broker_factory):
    b = broker_factory(transaction_timeout_ms=1000, transaction_check_interval_ms=1000)
    ns = b.namesrv
    committed = [r["id"] for r in java("TxProducer", namesrv=ns, topic="tx", count=2, action="commit")[:-1]]
    java("TxProducer", namesrv=ns, topic="tx", count=1, action="rollback", body="rolled-back")
    # UNKNOW at first: the broker checks back over the producer group's connection.
    rows = java("TxProducer", namesrv=ns, topic="tx", count=2, action="unknown", checker="commit", until_checks=2,
                hold=60, body="checked")
    checked = [r["id"] for r in rows if "id" in r]
    assert sorted(r["checked"] for r in rows if "checked" in r) == sorted(checked)
    rows = java("TxProducer", namesrv=ns, topic="tx", count=1, action="unknown", checker="rollback", until_checks=1,
                hold=60, body="checked-rollback")
    assert rows[-1]["checks"] >= 1
    got = java("PushConsumer", namesrv=ns, topic="tx", group="tx-g", expect=4, timeout=60)
    assert sorted(r["id"] for r in got[:-1]) == sorted(committed + checked)
    assert not any(r["body"].startswith(("rolled-back", "checked-rollback")) for r in got[:-1])
    assert admin(b, "tx", "list")["open"] == 0


def test_messages_cross_between_remoting_and_grpc_clients(broker):
    # Java over Remoting -> Python over gRPC.
    sent = java("Producer", namesrv=broker.namesrv, topic="cross", count=20, tag="TagJ", keys="jk-")[:-1]
    got = run_client("python", "receive", broker, topic="cross", group="cross-py", count=20, timeout=30)
    by_id = {r["id"]: r for r in got}
    assert sorted(by_id) == sorted(r["id"] for r in sent)
    for s in sent:
        r = by_id[s["id"]]
        assert r["tag"] == "TagJ" and r["props"]["index"] == str(int(r["body"].split("-")[-1]))
        assert r["keys"] == [f"jk-{r['body'].split('-')[-1]}"]
    # Python over gRPC -> Java over Remoting.
    py = run_client("python", "send", broker, topic="cross-back", count=20)
    rows = java("PushConsumer", namesrv=broker.namesrv, topic="cross-back", group="cross-java", expect=20, timeout=60)
    got = {r["id"]: r for r in rows[:-1]}
    assert sorted(got) == sorted(r["id"] for r in py)
    for p in py:
        r = got[p["id"]]
        assert (r["tags"], r["body"], r["keys"]) == (p["tag"], p["body"], p["keys"][0])
        assert r["props"]["origin"] == "python" and r["props"]["i"] == p["body"].split("-")[-1]


def test_a_pop_consumer_is_assigned_pops_acks_and_retries_by_invisible_time(broker):
    # clientRebalance=false: QUERY_ASSIGNMENT, then POP_MESSAGE / ACK_MESSAGE, and for
    # RECONSUME_LATER a CHANGE_MESSAGE_INVISIBLETIME (10 s, the client's first pop delay level).
    sent = [r["id"] for r in java("Producer", namesrv=broker.namesrv, topic="popped", count=5)[:-1]]
    rows = java("PushConsumer", namesrv=broker.namesrv, topic="popped", group="pop-g", pop=True, fail=1, expect=5,
                timeout=90)
    assert rows[-1]["received"] == 5, rows[-1]
    for id in sent:
        mine = [r for r in rows[:-1] if r["id"] == id]
        assert [r["reconsumeTimes"] for r in mine] == [0, 1], mine
        assert mine[1]["at"] - mine[0]["at"] >= 9_000, "redelivered after the changed invisible time, not at once"
        assert mine[0]["props"]["POP_CK"].split(" ")[5] == "broker-a", "POP_CK names the broker the ack goes to"
    progress = admin(broker, "group", "describe", "pop-g")
    assert sum(q["lag"] for q in progress["queues"] if q["topic"] == "popped") == 0, progress


def test_a_group_shared_by_a_java_pop_consumer_and_a_python_grpc_consumer_gets_each_message_once(broker):
    total = 300
    java_c = Background(java_cmd("PushConsumer", namesrv=broker.namesrv, topic="mixed", group="mixed-g", pop=True,
                                 expect=total, timeout=150))
    py_c = Background(client_args("python", "push", broker, topic="mixed", group="mixed-g", count=total, timeout=150))
    try:
        def by_whom():
            return ({r["id"] for r in java_c.rows if "id" in r}, {r["id"] for r in py_c.rows if "id" in r})

        # Both members are consuming before the bulk of the messages goes out.
        sent = []
        deadline = time.monotonic() + 90
        while not all(by_whom()):
            assert time.monotonic() < deadline, f"both members consuming: {[len(s) for s in by_whom()]}"
            sent += [r["id"] for r in java("Producer", namesrv=broker.namesrv, topic="mixed", count=10)[:-1]]
            wait_for(lambda: len(set.union(*by_whom())) >= len(sent) or all(by_whom()), 30, "the round to arrive")
        sent += [r["id"] for r in java("Producer", namesrv=broker.namesrv, topic="mixed", count=total - len(sent))[:-1]]
        wait_for(lambda: set.union(*by_whom()) >= set(sent), 90, "every message at one member or the other")
        time.sleep(2)  # a window for a duplicate to show
        java_ids, py_ids = by_whom()
        deliveries = [r["id"] for r in java_c.rows + py_c.rows if "id" in r]
        assert sorted(deliveries) == sorted(sent), "every message exactly once across the two protocols"
        assert java_ids and py_ids, "both members consumed"
        progress = admin(broker, "group", "describe", "mixed-g")
        assert sum(q["lag"] for q in progress["queues"] if q["topic"] == "mixed") == 0, progress
    finally:
        for c in (java_c, py_c):
            c.proc.kill()


def test_sync_flush_kill9_loses_no_acknowledged_send(broker_factory):
    b = broker_factory(flush_disk_type="sync")
    producer = Background(java_cmd("Producer", namesrv=b.namesrv, topic="durable", count=100000, send_timeout_ms=2000))
    wait_for(lambda: len(producer.rows) >= 300, 60, "300 acknowledged sends")
    b.kill9()
    acked = [r["id"] for r in list(producer.rows) if "id" in r]
    producer.proc.kill()
    b.start()
    rows = java("PushConsumer", namesrv=b.namesrv, topic="durable", group="after-crash", expect=len(acked), timeout=90)
    assert set(acked) <= {r["id"] for r in rows[:-1]}, "an acknowledged send was lost"


def test_a_nameserver_routes_remoting_clients_to_two_broker_groups(broker_factory):
    ns = broker_factory(mode="namesrv")
    groups = [broker_factory(mode="broker", broker_name=f"g{i}", namesrv_addrs=[ns.endpoint], auto_create_topic=True,
                             heartbeat_interval_ms=1000) for i in range(2)]
    for g in groups:
        subprocess.run([str(BIN), "topic", "create", "spread", "--queues", "2", "--server", g.endpoint], check=True,
                       capture_output=True, timeout=30)
    status = json.loads(subprocess.run([str(BIN), "cluster", "status", "--namesrv", ns.endpoint, "--json"],
                                       capture_output=True, text=True, check=True, timeout=30).stdout)
    assert sorted(b["remoting_endpoint"] for b in status["brokers"]) == sorted(g.remoting for g in groups), status

    def both_serve_spread():
        st = json.loads(subprocess.run([str(BIN), "cluster", "status", "--namesrv", ns.endpoint, "--json"],
                                       capture_output=True, text=True, check=True, timeout=30).stdout)
        return sum(any(t["name"] == "spread" for t in b["topics"]) for b in st["brokers"]) == 2
    wait_for(both_serve_spread, 30, "both groups to register topic spread")
    rows = java("Producer", namesrv=ns.endpoint, topic="spread", count=40)
    sent = [r["id"] for r in rows[:-1]]
    # An offset message id begins with its broker's address (8 bytes of hex).
    hosts = {r["offsetMsgId"][:16] for r in rows[:-1]}
    assert len(hosts) == 2, "the producer spread its sends over both broker groups"
    got = java("PushConsumer", namesrv=ns.endpoint, topic="spread", group="spread-g", expect=40, timeout=90)
    assert sorted(r["id"] for r in got[:-1]) == sorted(sent)


def test_the_go_client_produces_consumes_and_answers_check_backs(broker_factory):
    b = broker_factory(transaction_timeout_ms=1000, transaction_check_interval_ms=1000)
    sent = []
    for mode in ["sync", "async"]:
        rows = go("producer", namesrv=b.namesrv, topic="go", count=10, mode=mode)
        assert rows[-1] == {"sent": 10}, rows[-3:]
        sent += [r["id"] for r in rows[:-1]]
    rows = go("consumer", namesrv=b.namesrv, topic="go", group="go-g", count=20, timeout=60)
    assert sorted({r["id"] for r in rows[:-1]}) == sorted(sent)
    rows = go("txproducer", namesrv=b.namesrv, topic="go-tx", count=2, action="unknown", checker="commit", hold=60)
    assert rows[-1]["checks"] >= 2, rows
    ids = [r["id"] for r in rows if "id" in r]
    got = go("consumer", namesrv=b.namesrv, topic="go-tx", group="go-tx-g", count=2, timeout=60)
    assert sorted(r["id"] for r in got[:-1]) == sorted(ids)


def test_a_spring_boot_application_sends_and_listens(broker):
    p = subprocess.run([*jvm("spring", "boot"), "io.ferrocket.e2e.spring.App",
                        f"--rocketmq.name-server={broker.namesrv}", "--e2e.topic=spring", "--e2e.count=10",
                        "--e2e.timeout=90"], capture_output=True, text=True, timeout=180)
    rows = lines(p.stdout)
    assert p.returncode == 0, f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    assert sorted(r["sent"] for r in rows if "sent" in r) == sorted(r["received"] for r in rows if "received" in r
                                                                    and isinstance(r["received"], str))


def test_the_rust_client_produces_and_push_consumes_by_pull_and_by_pop(broker):
    sent = rust("send", namesrv=broker.namesrv, topic="rusty", count=10)
    assert sent[-1] == {"sent": 10}
    ids = sorted(r["id"] for r in sent[:-1])
    for group, pop in [("rust-pull", {}), ("rust-pop", {"pop": "true"})]:
        got = rust("push", namesrv=broker.namesrv, topic="rusty", group=group, expect=10, timeout=90, **pop)
        assert got[-1] == {"received": 10}, got[-3:]
        assert sorted({r["id"] for r in got[:-1]}) == ids, group
        assert {(r["tags"], r["topic"]) for r in got[:-1]} == {("TagR", "rusty")}
        lag = admin(broker, "group", "describe", group)["queues"]
        assert sum(q["lag"] for q in lag if q["topic"] == "rusty") == 0, (group, lag)
    # And a Java consumer reads what the Rust producer sent, with the same ids.
    rows = java("PushConsumer", namesrv=broker.namesrv, topic="rusty", group="rust-java", expect=10, timeout=60)
    assert sorted(r["id"] for r in rows[:-1]) == ids


def test_the_cpp_client_produces_and_consumes(broker):
    python = CLIENTS / "cpp" / ".venv" / "bin" / "python"
    assert python.exists(), "the C++ client venv is missing: ./scripts/test creates it"

    def cpp(*args):
        p = subprocess.run([str(python), str(CLIENTS / "cpp" / "client.py"), *args, "--namesrv", broker.namesrv],
                           capture_output=True, text=True, timeout=180)
        assert p.returncode == 0, f"{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
        return lines(p.stdout)

    sent = cpp("send", "--topic", "cpp", "--count", "10")
    got = cpp("consume", "--topic", "cpp", "--group", "cpp-g", "--count", "10", "--timeout", "90")
    assert got[-1] == {"received": 10}
    assert sorted(r["id"] for r in got[:-1]) == sorted(r["id"] for r in sent)
    assert {(r["tags"], r["index"]) for r in got[:-1]} == {("TagC", str(i)) for i in range(10)}
    # And a Java consumer reads what the C++ producer sent, with the same ids.
    rows = java("PushConsumer", namesrv=broker.namesrv, topic="cpp", group="cpp-java", expect=10, timeout=60)
    assert sorted(r["id"] for r in rows[:-1]) == sorted(r["id"] for r in sent)
