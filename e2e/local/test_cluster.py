"""A cluster of separate processes on 127.0.0.1, configured as the operator will configure pods:
two nameservers and two broker groups that register with both, and the official Python client
connected to one broker's endpoint. (Each group is a master alone: replication and failover
come with their own tests.)"""
import collections
import json
import subprocess

import pytest

from conftest import BIN, admin, cli, cluster_status, free_port, http_get, queue_offsets, run_client, wait_for


@pytest.fixture
def cluster(broker_factory):
    ns = [broker_factory("namesrv", broker_expiry_ms=3000) for _ in range(2)]
    addrs = [n.endpoint for n in ns]
    brokers = [broker_factory("broker", broker_name=name, namesrv_addrs=addrs, heartbeat_interval_ms=500)
               for name in ("broker-a", "broker-b")]
    for n in ns:
        wait_for(lambda: len(cluster_status(n)["brokers"]) == 2, 30, f"both brokers to register with {n.endpoint}")
    return ns, brokers


def create_topic(ns, name, *extra):
    cli(ns[0], "topic", "create", name, "--queues", "4", "--namesrv", ",".join(n.endpoint for n in ns), *extra)


def serving(ns, topic):
    """Broker groups the nameserver routes `topic` to."""
    return sorted(b["broker_name"] for b in cluster_status(ns)["brokers"] if any(t["name"] == topic for t in b["topics"]))


def test_messages_sent_through_one_broker_spread_over_both_groups_and_all_arrive(cluster):
    ns, (a, b) = cluster
    create_topic(ns, "spread")
    for n in ns:
        wait_for(lambda: serving(n, "spread") == ["broker-a", "broker-b"], 30, "both groups to serve the topic")
    sent = run_client("python", "send", a, topic="spread", count=200)
    stored = {x.endpoint: sum(queue_offsets(x, "spread")) for x in (a, b)}
    assert sum(stored.values()) == 200 and all(v > 0 for v in stored.values()), stored
    # A consumer connected to the other broker receives from both groups.
    got = run_client("python", "receive", b, topic="spread", group="g", count=200, timeout=60)
    missing = {m["id"] for m in sent} - {m["id"] for m in got}
    # Where the missing ones were sent, and what each group's master says of the consumer group.
    assert not missing, ([m["queue"] for m in sent if m["id"] in missing],
                         [admin(x, "group", "describe", "g") for x in (a, b)])
    assert collections.Counter(m["id"] for m in got) == collections.Counter(m["id"] for m in sent)
    # A consumer group configured once reaches every group's master.
    cli(a, "group", "create", "everywhere", "--fifo", "--max-delivery-attempts", "5",
        "--namesrv", ",".join(n.endpoint for n in ns))
    for x in (a, b):
        g = admin(x, "group", "describe", "everywhere")["group"]
        assert g["fifo"] and g["max_delivery_attempts"] == 5


def test_any_broker_reports_the_whole_cluster(cluster):
    ns, (a, b) = cluster
    out = subprocess.run([str(BIN), "cluster", "status", "--json", "--server", b.endpoint], capture_output=True,
                         text=True, timeout=30, check=True)
    brokers = {x["endpoint"]: x for x in json.loads(out.stdout)["brokers"]}
    assert set(brokers) == {a.endpoint, b.endpoint}
    assert all(x["role"] == "master" and x["error"] is None and x["max_offset"] is not None for x in brokers.values())


def test_a_topic_on_one_group_is_routed_only_there(cluster):
    ns, (a, b) = cluster
    create_topic(ns, "only-a", "--groups", "broker-a")
    wait_for(lambda: serving(ns[0], "only-a") == ["broker-a"], 30, "broker-a to serve the topic")
    # Sent through broker-b's endpoint, which does not have the topic: every message lands on broker-a.
    sent = run_client("python", "send", b, topic="only-a", count=50)
    assert sum(queue_offsets(a, "only-a")) == 50
    assert queue_offsets(b, "only-a") is None
    got = run_client("python", "receive", b, topic="only-a", group="g", count=50, timeout=60)
    assert {m["id"] for m in got} == {m["id"] for m in sent}


def test_clients_and_brokers_go_on_through_the_other_nameserver(cluster):
    ns, (a, b) = cluster
    create_topic(ns, "ha-ns")
    wait_for(lambda: serving(ns[1], "ha-ns") == ["broker-a", "broker-b"], 30, "both groups to serve the topic")
    ns[0].kill9()
    sent = run_client("python", "send", a, topic="ha-ns", count=100)
    assert all(sum(queue_offsets(x, "ha-ns")) > 0 for x in (a, b)), "routes still span both groups"
    got = run_client("python", "receive", b, topic="ha-ns", group="g", count=100, timeout=60)
    assert {m["id"] for m in got} == {m["id"] for m in sent}
    # A topic created now reaches the routes through the surviving nameserver.
    cli(ns[1], "topic", "create", "late", "--queues", "2", "--namesrv", ns[1].endpoint)
    wait_for(lambda: serving(ns[1], "late") == ["broker-a", "broker-b"], 30, "the new topic to be registered")


def test_a_silent_broker_is_dropped_from_routes(cluster):
    ns, (a, b) = cluster
    create_topic(ns, "expiry")
    wait_for(lambda: serving(ns[0], "expiry") == ["broker-a", "broker-b"], 30, "both groups to serve the topic")
    b.kill9()
    # broker_expiry_ms is 3 s here (120 s by default).
    for n in ns:
        wait_for(lambda: [x["broker_name"] for x in cluster_status(n)["brokers"]] == ["broker-a"], 30, "broker-b to expire")
    before = sum(queue_offsets(a, "expiry"))
    run_client("python", "send", a, topic="expiry", count=40)
    assert sum(queue_offsets(a, "expiry")) == before + 40, "every message goes to the live group"
    # Restarted, it registers again and serves again.
    b.start()
    wait_for(lambda: serving(ns[0], "expiry") == ["broker-a", "broker-b"], 30, "broker-b to register again")


def test_probes_and_metrics_of_every_process(broker_factory):
    ns_port, a_port = free_port(), free_port()
    ns = broker_factory("namesrv", metrics_listen=f"127.0.0.1:{ns_port}")
    a = broker_factory("broker", broker_name="broker-a", namesrv_addrs=[ns.endpoint], heartbeat_interval_ms=500,
                       metrics_listen=f"127.0.0.1:{a_port}")
    assert http_get(ns_port, "/healthz") == (200, "ok\n")
    assert http_get(ns_port, "/readyz")[0] == 200
    wait_for(lambda: http_get(a_port, "/readyz")[0] == 200, 30, "the broker to be ready (registered)")
    cli(ns, "topic", "create", "observed", "--queues", "2", "--namesrv", ns.endpoint)
    wait_for(lambda: "ferrocket_namesrv_topics 1" in http_get(ns_port, "/metrics")[1], 30, "the topic to be routed")
    assert "ferrocket_namesrv_brokers 1" in http_get(ns_port, "/metrics")[1]

    run_client("python", "send", a, topic="observed", count=7)
    run_client("python", "receive", a, topic="observed", group="half", count=3, timeout=30)
    text = http_get(a_port, "/metrics")[1]
    assert 'ferrocket_messages_in_total{topic="observed"} 7' in text
    assert 'ferrocket_messages_out_total{topic="observed"} 3' in text
    assert 'ferrocket_consumer_lag{group="half",topic="observed"} 4' in text
    assert "ferrocket_commitlog_flush_ms_count" in text

    # A broker none of whose nameservers answers is alive but not ready.
    b_port = free_port()
    broker_factory("broker", broker_name="broker-b", namesrv_addrs=[f"127.0.0.1:{free_port()}"],
                   metrics_listen=f"127.0.0.1:{b_port}")
    assert http_get(b_port, "/healthz")[0] == 200
    status, body = http_get(b_port, "/readyz")
    assert status == 503 and "not registered with any nameserver" in body, body


def test_queue_counts_per_group_and_a_topic_deleted_from_every_group(cluster):
    ns, (a, b) = cluster
    create_topic(ns, "sized", "--groups", "broker-a:2,broker-b:6")
    wait_for(lambda: serving(ns[0], "sized") == ["broker-a", "broker-b"], 30, "both groups to serve the topic")
    assert (len(queue_offsets(a, "sized")), len(queue_offsets(b, "sized"))) == (2, 6)
    run_client("python", "send", a, topic="sized", count=40)
    assert all(sum(queue_offsets(x, "sized")) > 0 for x in (a, b))

    cli(ns[0], "topic", "delete", "sized", "--namesrv", ",".join(n.endpoint for n in ns))
    wait_for(lambda: serving(ns[0], "sized") == [], 30, "the routes to drop the topic")
    assert queue_offsets(a, "sized") is None and queue_offsets(b, "sized") is None
    failed = subprocess.run([str(BIN), "topic", "delete", "sized", "--server", a.endpoint], capture_output=True,
                            text=True, timeout=30)
    assert failed.returncode != 0 and "does not exist" in failed.stderr, failed.stderr
