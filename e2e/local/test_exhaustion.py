"""Exhaustion and poison input with the official Python client: a real small filesystem that
another process fills while producers send, a restart on a 100 %-full disk, oversized tags and
group names, and the queue the broker picks for a producer that names none."""
import os
import pathlib
import subprocess
import tempfile
import threading

import pytest

from conftest import BIN, Broker, queue_offsets, run_client, start_client, wait_for


def test_python_producer_messages_spread_over_every_queue(broker):
    """The Python client 5.1.2 never sets a queue id: the broker picks one in turn, as RocketMQ's
    proxy does, instead of storing everything in queue 0."""
    sent = run_client("python", "send", broker, topic="spread", count=1000)
    assert len(sent) == 1000
    offsets = wait_for(lambda: (o := queue_offsets(broker, "spread")) and sum(o) == 1000 and o, 30, "dispatch")
    assert len(offsets) == 8
    assert min(offsets) > 0 and max(offsets) <= 2 * 1000 // 8, offsets


def test_oversized_tag_and_group_name_are_refused_up_front(broker):
    """A 65,000-character tag is refused on send with MESSAGE_PROPERTIES_TOO_LARGE (a client
    error, not retried): stored, it could never be dead-lettered. A 255-character group is refused
    with ILLEGAL_CONSUMER_GROUP: its %RETRY% topic would not be a legal topic name."""
    sent = run_client("python", "send", broker, topic="poison", count=1, tag="t" * 65_000, keep_going=True)
    assert len(sent) == 1 and "error" in sent[0], sent
    assert sent[0]["error"].startswith("43101"), sent  # MESSAGE_PROPERTIES_TOO_LARGE
    p = subprocess.run(
        [str(BIN), "group", "create", "g" * 255, "--server", broker.endpoint], capture_output=True, text=True, timeout=30
    )
    assert p.returncode != 0 and "120" in p.stderr, p.stderr
    log = broker.log.read_text()
    assert "ERROR" not in log, log[-3000:]


class Tmpfs:
    """A tmpfs of `mib` MiB on a new directory; unmounted on close."""

    def __init__(self, mib):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="ferrocket-fs-"))
        p = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m", "tmpfs", str(self.dir)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            os.rmdir(self.dir)
            pytest.skip(f"cannot mount a tmpfs here (needs root): {p.stderr.strip()}")

    def fill(self, name):
        """Writes a file until the filesystem is full to its last byte; returns its path."""
        path = self.dir / name
        with open(path, "wb", buffering=0) as f:
            for size in (1 << 20, 4096, 512):
                while True:
                    try:
                        f.write(b"\1" * size)
                    except OSError:
                        break
        return path

    def used(self):
        st = os.statvfs(self.dir)
        return 1 - st.f_bavail / st.f_blocks

    def close(self):
        subprocess.run(["umount", "-l", str(self.dir)], check=False)
        os.rmdir(self.dir)


@pytest.fixture
def tmpfs():
    fs = Tmpfs(160)
    yield fs
    fs.close()


def collect(proc):
    """Reads a client's JSON lines in a thread; returns the growing list."""
    import json
    lines = []

    def read():
        for line in proc.stdout:
            if line.startswith("{"):
                lines.append(json.loads(line))

    threading.Thread(target=read, daemon=True).start()
    return lines


def test_a_disk_filled_behind_the_broker_refuses_sends_keeps_acks_and_restarts_full(tmpfs, tmp_path):
    # Early deletion off (disk_max_used_ratio 1.0): under disk pressure RocketMQ's retention deletes
    # the oldest segments whether or not they were consumed, and this drain must find them all.
    b = Broker(tmpfs.dir / "data", flush_disk_type="sync", commitlog_segment_bytes=4 << 20, max_body_bytes=1 << 20,
               clean_interval_ms=1000, disk_max_used_ratio=1.0)
    b.log = tmp_path / "broker.log"  # not on the disk being filled
    b.start()
    try:
        stop = tmp_path / "stop"
        producer = start_client("python", "send", b, topic="full", count=1_000_000, pad=30_000, keep_going=True,
                                stop_file=stop)
        out = collect(producer)
        # 24 MB in six CommitLog segments: enough for retention to free space after the restart.
        wait_for(lambda: len(out) >= 800, 120, "800 acknowledged sends")
        filler = tmpfs.fill("filler")
        wait_for(lambda: any("error" in m for m in out[-20:]), 60, "sends refused on the full disk")
        stop.touch()
        producer.wait(timeout=60)
        assert b.proc.poll() is None, "the broker died on the full disk"
        errors = [m["error"] for m in out if "error" in m]
        assert any("disk full" in e for e in errors), errors[:3]
        acked = [m for m in out if "id" in m]

        # Every acknowledged message drains, and every ack of the drain succeeds (the driver
        # raises on a failed ack), though the disk is still full.
        ids = tmp_path / "ids"
        ids.write_text("\n".join(m["id"] for m in acked))
        got = run_client("python", "receive", b, topic="full", group="drain", count=len(acked), until_ids=ids,
                         timeout=180)
        assert {m["id"] for m in acked} <= {m["id"] for m in got}
        assert run_client("python", "receive", b, topic="full", group="drain", count=1, poll=2, timeout=3) == []

        # Space again: sends are accepted within a retention pass.
        filler.unlink()
        wait_for(lambda: run_client("python", "send", b, topic="full", count=1, keep_going=True)[0].get("id"), 30,
                 "sends accepted after the filler is gone")

        # A restart on a 100 %-full disk: stop and start cleanly, and retention, with early deletion
        # on again (the default 0.75), frees space by deleting the oldest (consumed) segments.
        tmpfs.fill("filler2")
        assert tmpfs.used() > 0.999
        assert b.stop() == 0, b.log.read_text()[-3000:]
        del b.config["disk_max_used_ratio"]
        b.start()
        wait_for(lambda: tmpfs.used() < 0.9, 30, "retention to free space on the restarted broker")
        assert run_client("python", "send", b, topic="full", count=1)[0]["id"]
        log = b.log.read_text()
        assert "retention deleted old CommitLog segments" in log
        errors = [line for line in log.splitlines() if "ERROR" in line and "disk_refuse_write_ratio" not in line]
        assert errors == [], errors[:5]  # nothing corrupt, nothing unreadable, no failed ack
        assert "panicked" not in log
    finally:
        b.stop()
