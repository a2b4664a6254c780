"""Master/slave replication: a master and a slave of one broker group as separate processes, the
official Python client sending to the master. SYNC replication acknowledges a send only once the
slave holds it, and says so clearly when it cannot; ASYNC acknowledges without the slave. A slave
catches up from where it was, and holds the master's consumer progress."""
import json
import pathlib
import select
import signal
import subprocess
import time

from conftest import (BIN, admin, cli, client_args, free_port, http_get, queue_offsets, run_client, start_client,
                      wait_for)


def pair(broker_factory, replication):
    master = broker_factory("broker", broker_name="g", replication=replication, ha_sync_timeout_ms=1000,
                            metrics_listen=f"127.0.0.1:{free_port()}")
    slave = broker_factory("broker", broker_name="g", broker_id=1, broker_role="slave",
                           ha_master_addr=master.endpoint)
    cli(master, "topic", "create", "rep", "--queues", "2")
    wait_for(lambda: queue_offsets(slave, "rep") is not None, 30, "the slave to copy the topic")
    return master, slave


def caught_up(master, slave, topic="rep"):
    return queue_offsets(slave, topic) == queue_offsets(master, topic)


def message_body(broker, message_id):
    out = subprocess.run([str(BIN), "message", "get", "--id", message_id, "--server", broker.endpoint, "--json"],
                         capture_output=True, text=True, timeout=30, check=True).stdout
    return json.loads(out)["body"]


def test_sync_replication_waits_for_the_slave_and_never_gives_a_false_ok(broker_factory):
    master, slave = pair(broker_factory, "sync")
    sent = run_client("python", "send", master, topic="rep", count=100)
    assert len(sent) == 100
    wait_for(lambda: caught_up(master, slave), 10, "the slave's ConsumeQueues to match")
    assert message_body(slave, sent[57]["id"]) == sent[57]["body"]
    metrics = http_get(master.config["metrics_listen"].rsplit(":", 1)[1], "/metrics")[1]
    assert "ferrocket_slaves_in_sync 1" in metrics, metrics
    assert f'ferrocket_replication_lag_bytes{{slave="{slave.endpoint}"}} 0' in metrics, metrics

    # Consumer progress replicates too: the slave could take over without redelivering.
    run_client("python", "receive", master, topic="rep", group="g1", count=30, timeout=30)
    wait_for(lambda: admin(slave, "group", "lag", "g1")["total_lag"] == 70, 10, "the slave to hold the acks")

    # Without its slave a SYNC master refuses to acknowledge.
    slave.kill9()
    failed = subprocess.run(client_args("python", "send", master, topic="rep", count=1), capture_output=True,
                            text=True, timeout=120)
    assert failed.returncode != 0 and "replicas required hold it" in failed.stderr, failed.stderr[-2000:]
    assert "min_in_sync_replicas 2" in failed.stderr, failed.stderr[-2000:]

    # Restarted, the slave catches up from where it was, and sends are acknowledged again.
    slave.start()
    wait_for(lambda: caught_up(master, slave), 30, "the slave to catch up")
    assert len(run_client("python", "send", master, topic="rep", count=10)) == 10
    wait_for(lambda: caught_up(master, slave), 10, "the slave to hold the new messages")


def test_async_replication_acknowledges_without_the_slave_which_catches_up_later(broker_factory):
    master, slave = pair(broker_factory, "async")
    slave.kill9()
    sent = run_client("python", "send", master, topic="rep", count=50)
    assert len(sent) == 50
    slave.start()
    wait_for(lambda: caught_up(master, slave), 30, "the slave to catch up")
    assert message_body(slave, sent[-1]["id"]) == sent[-1]["body"]


def test_a_client_connected_to_a_slave_writes_to_its_master(broker_factory):
    master, slave = pair(broker_factory, "async")
    sent = run_client("python", "send", slave, topic="rep", count=5)
    assert sum(queue_offsets(master, "rep")) == 5
    wait_for(lambda: caught_up(master, slave), 10, "the slave to hold them")
    got = run_client("python", "receive", slave, topic="rep", group="g", count=5, timeout=30)
    assert {m["id"] for m in got} == {m["id"] for m in sent}


def test_a_slave_is_ready_only_while_it_replicates(broker_factory):
    port = free_port()
    dead = f"127.0.0.1:{free_port()}"
    slave = broker_factory("broker", broker_name="g", broker_id=1, broker_role="slave", ha_master_addr=dead,
                           metrics_listen=f"127.0.0.1:{port}")
    status, body = http_get(port, "/readyz")
    assert status == 503 and "not replicating from the master" in body, body
    master = broker_factory("broker", broker_name="g")
    slave.stop()
    slave.config["ha_master_addr"] = master.endpoint
    slave.start()
    wait_for(lambda: http_get(port, "/readyz")[0] == 200, 30, "the slave to be ready once it replicates")
    master.kill9()
    wait_for(lambda: http_get(port, "/readyz")[0] == 503, 30, "the slave to be unready without its master")


def test_topic_and_group_changes_reach_the_slave_and_a_slave_refuses_them(broker_factory):
    master, slave = pair(broker_factory, "async")
    cli(master, "group", "create", "gone-soon")
    wait_for(lambda: "gone-soon" in cli(slave, "group", "list"), 10, "the slave to copy the group")
    refused = subprocess.run([str(BIN), "topic", "create", "on-slave", "--server", slave.endpoint],
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "this broker is a slave" in refused.stderr, refused.stderr
    cli(master, "topic", "delete", "rep")
    cli(master, "group", "delete", "gone-soon")
    wait_for(lambda: queue_offsets(slave, "rep") is None, 10, "the slave to delete the topic")
    wait_for(lambda: "gone-soon" not in cli(slave, "group", "list"), 10, "the slave to delete the group")


def all_threads_stopped(pid):
    """True once every thread of `pid` is in state T (stopped): kill(2) returns before threads
    running on another core have stopped."""
    tasks = pathlib.Path(f"/proc/{pid}/task")
    return all((t / "stat").read_text().rsplit(") ", 1)[1][:1] in "Tt" for t in tasks.iterdir())


def test_a_commit_under_sync_replication_is_neither_visible_nor_acknowledged_before_the_slave_holds_it(
        broker_factory, tmp_path):
    """The engine owns durability: EndTransaction(COMMIT) waits for the in-sync slave like a send,
    and consumers see no message the slave does not hold (RocketMQ's confirm offset), so a
    failover cannot take back what a consumer was given or a producer was told."""
    master = broker_factory("broker", broker_name="g", replication="sync", ha_sync_timeout_ms=30000,
                            ha_max_lag_ms=60000, metrics_listen=f"127.0.0.1:{free_port()}")
    slave = broker_factory("broker", broker_name="g", broker_id=1, broker_role="slave",
                           ha_master_addr=master.endpoint)
    cli(master, "topic", "create", "txrep", "--queues", "1", "--types", "transaction")
    wait_for(lambda: queue_offsets(slave, "txrep") is not None, 30, "the slave to copy the topic")
    go = tmp_path / "commit-now"
    producer = start_client("python", "txsend", master, topic="txrep", count=1, commit_after_file=go, hold=0)
    try:
        sent = json.loads(producer.stdout.readline())
        assert "id" in sent, sent
        metrics_port = master.config["metrics_listen"].rsplit(":", 1)[1]
        wait_for(lambda: f'ferrocket_replication_lag_bytes{{slave="{slave.endpoint}"}} 0'
                 in http_get(metrics_port, "/metrics")[1], 30, "the slave to hold the half message")

        slave.proc.send_signal(signal.SIGSTOP)
        wait_for(lambda: all_threads_stopped(slave.proc.pid), 5, "every thread of the slave to stop")
        stopped_at = time.monotonic()
        go.touch()
        # While the slave is stopped: no consumer gets the message, and the commit is not answered.
        early = run_client("python", "receive", master, topic="txrep", group="c", count=1, timeout=3, poll=1)
        assert early == [], early
        assert queue_offsets(master, "txrep") == [0], "the committed message is not visible yet"
        assert producer.poll() is None, "the producer ended while the slave was stopped"
        readable, _, _ = select.select([producer.stdout], [], [], 0)
        assert not readable, f"the commit was answered while the slave was stopped: {producer.stdout.readline()}"
        held = time.monotonic() - stopped_at
    finally:
        slave.proc.send_signal(signal.SIGCONT)

    answer = json.loads(producer.stdout.readline())
    assert answer.get("committed") == sent["id"], answer
    assert answer["ms"] >= held * 1000 - 500, f"the commit was answered after {answer['ms']} ms of {held:.1f} s"
    producer.wait(timeout=30)
    got = run_client("python", "receive", master, topic="txrep", group="c", count=2, timeout=8, poll=2)
    assert [m["id"] for m in got] == [sent["id"]], f"delivered exactly once after SIGCONT: {got}"
