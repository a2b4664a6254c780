"""Partitions between real processes, each on its own host (a network namespace, netns.py): three
controller nameservers as one Raft group and two broker groups of a master and a slave, with the
official Python client streaming SYNC sends from the root namespace throughout. The test cuts
hosts apart with blackhole routes, never by stopping processes, and heals them."""
import datetime
import json
import struct
import time

import pytest

from conftest import queue_offsets, wait_for
from netns import available
from test_failover import REPORTS, Stream, failover_cluster, in_sync, leader, phase, received_ids, view

WHY = available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no network namespaces here: {WHY}")


def elected_epochs(member):
    """The epochs of every election in a controller member's Raft log on disk (records of u32
    length, u32 CRC32, then openraft's JSON entry)."""
    data = (member.data_dir / "controller" / "raft-log").read_bytes()
    at, epochs = 0, set()
    while at + 8 <= len(data):
        n = struct.unpack_from("<I", data, at)[0]
        body = data[at + 8:at + 8 + n]
        if len(body) < n:
            break
        payload = json.loads(body)["payload"]
        if isinstance(payload, dict) and "Elect" in payload.get("Normal", {}):
            epochs.add(payload["Normal"]["Elect"]["epoch"])
        at += 8 + n
    return epochs


def test_a_controller_leader_cut_off_is_replaced_and_catches_up_after_healing(net, broker_factory, tmp_path):
    ns, groups = failover_cluster(broker_factory, "sync", controllers=3, net=net)
    (old_master, slave), (stream_to, _) = groups["g-a"], groups["g-b"]
    stream = Stream(stream_to, "fo", tmp_path / "stop")
    wait_for(lambda: len(stream.oks("g-a")) >= 100, 90, "100 acknowledged sends to g-a")
    first = wait_for(lambda: leader(ns), 30, "a controller leader")
    cut_host = f"c{first['id']}"
    cut_off = ns[first["id"] - 1]
    phase(f"cutting controller leader {first['id']} (term {first['term']}) off from every other host")
    net.isolate(cut_host)
    cut = time.monotonic()
    new = wait_for(lambda: (l := leader(ns)) and l["id"] != first["id"] and l, 30, "another controller leader")
    phase(f"controller {new['id']} leads in term {new['term']} after {time.monotonic() - cut:.1f} s")
    assert leader([cut_off]) is None, "a leader cut off from its majority must stop answering"
    # Elections go on without it: kill g-a's master, and the others elect its slave.
    wait_for(lambda: (v := view(ns, "g-a")) and len(v["members"]) == 2, 30, "g-a's brokers to heartbeat the new leader")
    phase("killing g-a's master")
    old_master.kill9()
    killed = time.monotonic()
    wait_for(lambda: (v := view(ns, "g-a")) and v["master"] == slave.endpoint and v["epoch"] == 2, 30,
             "g-a's slave to be elected by the two controllers left")
    elected = time.monotonic() - killed
    phase(f"g-a's slave elected after {elected:.1f} s")
    assert elected <= 10, f"election took {elected:.1f} s"
    assert 2 not in elected_epochs(cut_off), "the cut-off member cannot have the election yet"
    net.heal_all()
    wait_for(lambda: 2 in elected_epochs(cut_off), 30, "the healed member to catch up with the election")
    phase("healed member caught up")
    healed = time.time()
    wait_for(lambda: stream.oks("g-a", after=healed), 60, "acknowledged sends on g-a's new master")
    stream.stop()
    ok = stream.oks()
    missing = {m["id"] for m in ok} - received_ids([slave, stream_to], "check-partition")
    assert not missing, f"{len(missing)} of {len(ok)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"


def logged_at(procs, *words):
    """When the first line holding every one of `words` was logged by any of `procs` (epoch
    seconds, from the log's own RFC 3339 timestamps); None if none did."""
    times = []
    for p in procs:
        for line in p.log.read_text().splitlines():
            if all(w in line for w in words):
                stamp = line.split()[0].replace("Z", "+00:00")
                times.append(datetime.datetime.fromisoformat(stamp).timestamp())
                break
    return min(times, default=None)


@pytest.mark.parametrize("replication", ["sync", "async"])
def test_a_master_cut_off_fences_itself_before_its_slave_is_elected(net, broker_factory, tmp_path, replication):
    """g-a's master is cut off from the controllers and its slave, but not from the producer: it
    stops taking writes (fenced) before the controllers elect its slave, stores nothing after,
    and once healed rejoins as a slave. With SYNC every acknowledged message is received; with
    ASYNC only what it acknowledged before fencing can be lost, and that is measured."""
    ns, groups = failover_cluster(broker_factory, replication, controllers=3, net=net)
    (old, slave), (stream_to, _) = groups["g-a"], groups["g-b"]
    stream = Stream(stream_to, "fo", tmp_path / "stop")
    wait_for(lambda: len(stream.oks("g-a")) >= 100, 90, "100 acknowledged sends to g-a")
    phase("cutting g-a's master off from the controllers and its slave")
    for other in ("c1", "c2", "c3", "g-a-1"):
        net.cut("g-a-0", other)
    cut = time.time()
    wait_for(lambda: (v := view(ns, "g-a")) and v["master"] == slave.endpoint and v["epoch"] == 2, 30,
             "g-a's slave to be elected")
    phase(f"g-a's slave elected after {time.time() - cut:.1f} s")
    frozen = queue_offsets(old, "fo")
    resumed = time.time()
    wait_for(lambda: stream.oks("g-a", after=resumed), 60, "acknowledged sends on g-a's new master")
    assert queue_offsets(old, "fo") == frozen, "the cut-off master stored sends after its slave was elected"
    fenced_at = logged_at([old], "master fenced")
    elected_at = logged_at(ns, "master elected", slave.endpoint)
    assert fenced_at and elected_at, (fenced_at, elected_at)
    phase(f"fenced {fenced_at - cut:.1f} s after the cut, {elected_at - fenced_at:.1f} s before the election")
    assert fenced_at < elected_at, "the old master took writes while its successor was elected"
    # ha_fence_after_ms (3 s) from the last answered heartbeat, sent at most 1 s before the cut.
    assert fenced_at - cut <= 4.5
    net.heal_all()
    wait_for(lambda: in_sync(ns, "g-a", slave, old), 60, "the old master to rejoin as its slave's slave")
    phase("old master rejoined as a slave")
    stream.stop()
    ok = stream.oks()
    got = received_ids([slave, stream_to], f"check-fence-{replication}")
    lost = [m for m in ok if m["id"] not in got]
    if replication == "sync":
        assert not lost, f"{len(lost)} of {len(ok)} acknowledged messages lost, e.g. {lost[:5]}"
    else:
        # Only what the old master acknowledged after the cut and before it fenced itself.
        assert all(m["queue"].startswith("g-a.") and cut - 1 <= m["t"] <= fenced_at + 0.5 for m in lost), lost[:5]
        REPORTS.mkdir(parents=True, exist_ok=True)
        (REPORTS / "partition-async.json").write_text(json.dumps({
            "acknowledged": len(ok), "lost": len(lost), "fenced_after_cut_s": round(fenced_at - cut, 2),
            "elected_after_fence_s": round(elected_at - fenced_at, 2)}, indent=1))
        print("ASYNC partition:", len(lost), "lost of", len(ok))
