"""Partitions between real processes, each on its own host (a network namespace, netns.py): three
controller nameservers as one Raft group and two broker groups of a master and a slave, with the
official Python client streaming SYNC sends from the root namespace throughout. The test cuts
hosts apart with blackhole routes, never by stopping processes, and heals them."""
import json
import struct
import time

import pytest

from conftest import wait_for
from netns import Net, available
from test_failover import HOSTS, Stream, failover_cluster, leader, phase, received_ids, view

WHY = available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no network namespaces here: {WHY}")


@pytest.fixture
def net():
    n = Net(HOSTS)
    yield n
    n.close()


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


def test_a_controller_leader_cut_off_is_replaced_and_catches_up_after_healing(broker_factory, net, tmp_path):
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
