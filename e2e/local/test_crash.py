"""SYNC_FLUSH durability across `kill -9`: every acknowledged send survives, and an acknowledged
receive is never delivered again."""
import json
import uuid

from conftest import run_client, start_client


def test_kill9_keeps_every_acknowledged_message_and_ack(broker_factory, tmp_path):
    broker = broker_factory(flush_disk_type="sync")
    topic, group = f"crash-{uuid.uuid4().hex[:6]}", "crash-group"
    # A producer streams sends; the broker is killed while it is still sending.
    producer = start_client("python", "send", broker, topic=topic, count=100000)
    acked = []
    for line in producer.stdout:
        acked.append(json.loads(line)["id"])
        if len(acked) == 300:
            break
    broker.kill9()
    for line in producer.stdout:  # sends acknowledged between the 300th and the kill
        acked.append(json.loads(line)["id"])
    producer.wait(timeout=120)
    assert len(acked) >= 300

    broker.start()
    # The send in flight at the kill may be stored though its acknowledgement never reached the
    # producer (it sends one at a time): receive until every acknowledged message arrived, with
    # room for that one, instead of stopping at len(acked), which it could displace.
    wanted = tmp_path / "acked"
    wanted.write_text("\n".join(acked))
    got = run_client("python", "receive", broker, topic=topic, group=group, count=len(acked) + 1, until_ids=wanted,
                     invisible=30, timeout=90)
    ids = [m["id"] for m in got]
    assert len(ids) == len(set(ids)), "a message was delivered twice"
    assert set(acked) <= set(ids), f"{len(set(acked) - set(ids))} acknowledged messages lost"

    # Those receives were acked (SYNC_FLUSH: durable before the ack returned): kill -9 again.
    broker.kill9()
    broker.start()
    again = run_client("python", "receive", broker, topic=topic, group=group, count=1, invisible=2, poll=2, timeout=6)
    assert [m for m in again if m["id"] in set(acked)] == [], "an acknowledged message was delivered again"


def test_clean_restart_keeps_topics_and_progress(broker_factory):
    broker = broker_factory()
    topic, group = f"restart-{uuid.uuid4().hex[:6]}", "restart-group"
    sent = run_client("node", "send", broker, topic=topic, count=20)
    first = run_client("node", "receive", broker, topic=topic, group=group, count=10, timeout=30)
    assert broker.stop() == 0, "SIGTERM must exit 0"
    broker.start()
    rest = run_client("rust", "receive", broker, topic=topic, group=group, count=10, timeout=30)
    assert sorted(m["id"] for m in first + rest) == sorted(m["id"] for m in sent)
