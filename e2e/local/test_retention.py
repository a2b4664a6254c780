"""Retention and disk safety with the official Python client: small CommitLog segments and
disk-usage thresholds forced low, so the broker's real disk measurement (statvfs) decides."""
import subprocess

from conftest import cli, client_args, queue_ranges, run_client, wait_for

# The real disk may itself be above the default 75 %: only the thresholds a test forces count.
SMALL = {"commitlog_segment_bytes": 131072, "max_body_bytes": 65536, "clean_interval_ms": 200,
         "consumer_snapshot_interval_ms": 200, "disk_max_used_ratio": 1.0, "disk_refuse_write_ratio": 1.0}


def segment_files(b):
    return sorted(p.name for p in (b.data_dir / "commitlog").iterdir())


def restart(b, **config):
    assert b.stop() == 0
    b.config.update(config)
    b.start()


def test_disk_pressure_deletes_oldest_segments_and_consumers_continue_from_the_oldest_kept(broker_factory):
    b = broker_factory(**SMALL)
    cli(b, "topic", "create", "ret", "--queues", "1")
    sent = run_client("python", "send", b, topic="ret", count=20, pad=1000)
    # A group that consumed half of the first messages, then fell behind.
    assert len(run_client("python", "receive", b, topic="ret", group="slow", count=10, timeout=30)) == 10
    sent += run_client("python", "send", b, topic="ret", count=500, pad=1000, body_prefix="more")
    assert len(segment_files(b)) >= 4

    # The disk counts as full above 0.01 %: the broker deletes all it can, early, oldest first.
    restart(b, disk_max_used_ratio=0.0001)
    wait_for(lambda: len(segment_files(b)) == 2, 30, "all but the segment being written and its spare to be deleted")
    low, high = queue_ranges(b, "ret")[0]
    assert 10 < low < high == len(sent)

    # The slow group continues from the oldest kept message and gets every later one once.
    kept = sent[low:]
    got = run_client("python", "receive", b, topic="ret", group="slow", count=len(kept), timeout=60)
    assert [m["id"] for m in got] == [m["id"] for m in kept]
    assert [m["body"] for m in got] == [m["body"] for m in kept]

    # New messages are still accepted (below the refuse ratio), and a kill -9 leaves a store that
    # opens cleanly with the same range.
    new = run_client("python", "send", b, topic="ret", count=5)
    b.kill9()
    b.start()
    assert queue_ranges(b, "ret")[0][1] == high + 5
    got = run_client("python", "receive", b, topic="ret", group="slow", count=5, timeout=30)
    assert [m["id"] for m in got] == [m["id"] for m in new]


def test_above_the_refuse_ratio_sends_fail_clearly_while_receives_and_acks_go_on(broker_factory):
    b = broker_factory(**SMALL)
    cli(b, "topic", "create", "full", "--queues", "1")
    sent = run_client("python", "send", b, topic="full", count=10)

    restart(b, disk_refuse_write_ratio=0.0001)
    refused = subprocess.run(client_args("python", "send", b, topic="full", count=1), capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode != 0 and "disk full" in refused.stderr, refused.stderr[-2000:]
    got = run_client("python", "receive", b, topic="full", group="g", count=10, timeout=30)
    assert [m["id"] for m in got] == [m["id"] for m in sent]
    assert run_client("python", "receive", b, topic="full", group="g", count=1, poll=1, timeout=3) == [], \
        "acks were not kept"

    restart(b, disk_refuse_write_ratio=0.9)
    assert len(run_client("python", "send", b, topic="full", count=1)) == 1
