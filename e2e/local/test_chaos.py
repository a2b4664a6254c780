"""Random faults: the partition cluster (three controller nameservers as one Raft group, two broker
groups of a master and a slave, each process on its own host, netns.py) takes CYCLES faults one
after another while the official Python client streams sends from the root namespace. Each fault
is a kill -9 and restart, a SIGSTOP and SIGCONT, or a partition of one host from a random set of
the others, held for 1 to 8 s (around the 3 s fence and the 4 s heartbeat timeout, so some faults
end before anyone notices and others force an election). After each, the test waits until both
groups have a master with both members back in sync before the next.

The checker then replays what the producer saw acknowledged against what a new consumer group
receives: with SYNC replication nothing acknowledged is lost (had two masters acknowledged in
one epoch, the one deposed would have had its tail cut); with ASYNC the loss is measured, and only
messages acknowledged during a fault may be missing. Epochs never go back. The schedule (seeded:
FERROCKET_CHAOS_SEED replays one) and the results go to target/e2e-reports/chaos-<mode>.json.

The producer's endpoint, g-b's first broker, is partitioned like any host but never stopped: the
client resolves routes through that one endpoint (see test_failover.kill_master_mid_stream)."""
import json
import os
import random
import signal
import time

import pytest

from conftest import cluster_status, queue_offsets, run_client, wait_for
from netns import available
from test_failover import REPORTS, Stream, failover_cluster, in_sync, phase, view

WHY = available()
pytestmark = pytest.mark.skipif(WHY is not None, reason=f"no network namespaces here: {WHY}")

CYCLES = int(os.environ.get("FERROCKET_CHAOS_CYCLES", "20"))
HOLD_S = (1.0, 8.0)


def settled(ns, group, pair):
    """True once `group` has one of `pair` as master, routed, with both members in sync."""
    v = view(ns, group)
    master = next((b for b in pair if v and b.endpoint == v["master"]), None)
    return master is not None and in_sync(ns, group, master, *(b for b in pair if b is not master))


def fault(rng, procs, entry, masters):
    """Picks one fault: (kind, host, cut-off hosts, hold seconds). Half of the time it hits a
    current master (`masters`: host names), so elections happen, not only restarts."""
    kind = rng.choice(("kill", "pause", "partition"))
    hold = round(rng.uniform(*HOLD_S), 2)
    pool = sorted(h for h in procs if kind == "partition" or procs[h] is not entry)
    hit = [h for h in pool if h in masters]
    host = rng.choice(hit if hit and rng.random() < 0.5 else pool)
    if kind == "partition":
        others = sorted(h for h in procs if h != host)
        return kind, host, sorted(rng.sample(others, rng.randint(1, len(others)))), hold
    return kind, host, [], hold


@pytest.mark.parametrize("replication", ["sync", "async"])
def test_random_fault_cycles(net, broker_factory, tmp_path, replication):
    seed = int(os.environ.get("FERROCKET_CHAOS_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    phase(f"chaos seed {seed}, {CYCLES} cycles, {replication}")
    ns, groups = failover_cluster(broker_factory, replication, controllers=3, net=net)
    procs = {f"c{i + 1}": n for i, n in enumerate(ns)}
    procs |= {f"{g}-{k}": b for g, pair in groups.items() for k, b in enumerate(pair)}
    entry = groups["g-b"][0]
    stream = Stream(entry, "fo", tmp_path / "stop")
    wait_for(lambda: len(stream.oks("g-a")) >= 50 and len(stream.oks("g-b")) >= 50, 90, "sends to both groups")
    views = {g: view(ns, g) for g in groups}
    schedule = []
    for cycle in range(CYCLES):
        masters = {h for h, b in procs.items() if b.endpoint in {v["master"] for v in views.values()}}
        kind, host, cut_from, hold = fault(rng, procs, entry, masters)
        victim = procs[host]
        phase(f"cycle {cycle + 1}: {kind} {host} {cut_from or ''} for {hold} s")
        began = time.time()
        if kind == "kill":
            victim.kill9()
        elif kind == "pause":
            victim.proc.send_signal(signal.SIGSTOP)
        else:
            for other in cut_from:
                net.cut(host, other)
        # The fault lasts `hold` seconds: the schedule under test, not a wait for a condition.
        time.sleep(hold)
        if kind == "kill":
            victim.start()
        elif kind == "pause":
            victim.proc.send_signal(signal.SIGCONT)
        else:
            net.heal_all()
        ended = time.time()
        for g, pair in groups.items():
            wait_for(lambda: settled(ns, g, pair), 90, f"{g} to settle after cycle {cycle + 1}")
        now = {g: view(ns, g) for g in groups}
        epochs = {g: (views[g]["epoch"], now[g]["epoch"]) for g in groups}
        assert all(before <= after for before, after in epochs.values()), f"an epoch went back: {epochs}"
        schedule.append({"kind": kind, "host": host, "cut_from": cut_from, "hold_s": hold,
                         "began": began, "ended": ended, "settled_s": round(time.time() - ended, 2),
                         "elections": {g: after - before for g, (before, after) in epochs.items()}})
        phase(f"cycle {cycle + 1} settled after {schedule[-1]['settled_s']} s; epochs {epochs}")
        views = now
    settled_at = time.time()
    wait_for(lambda: stream.oks("g-a", after=settled_at) and stream.oks("g-b", after=settled_at), 90,
             "acknowledged sends on both groups after the last fault")
    stream.stop()
    ok = stream.oks()
    # No fault since the last views: they still name the masters.
    masters = [next(b for b in pair if b.endpoint == views[g]["master"]) for g, pair in groups.items()]
    stored = sum(sum(queue_offsets(m, "fo")) for m in masters)
    got = run_client("python", "receive", entry, topic="fo", group=f"check-chaos-{replication}", count=stored,
                     timeout=300, poll=1)
    received = {m["id"] for m in got}
    phase(f"received {len(got)} of the {stored} messages stored; {len(ok)} acknowledged")
    assert len(got) == stored
    lost = [m for m in ok if m["id"] not in received]
    report = {"seed": seed, "replication": replication, "cycles": schedule, "acknowledged": len(ok),
              "failed_sends": len(stream.errors()), "stored": stored, "lost": len(lost),
              "elections": sum(sum(c["elections"].values()) for c in schedule),
              "cluster": cluster_status(*ns)}
    REPORTS.mkdir(parents=True, exist_ok=True)
    (REPORTS / f"chaos-{replication}.json").write_text(json.dumps(report, indent=1))
    print(f"chaos {replication}: seed {seed}, {report['elections']} elections, {len(lost)} lost of {len(ok)}")
    if replication == "sync":
        assert not lost, f"{len(lost)} of {len(ok)} acknowledged messages lost (seed {seed}), e.g. {lost[:5]}"
    else:
        # ASYNC can lose only what a master acknowledged during a fault and had not replicated.
        during = lambda t: any(c["began"] - 1 <= t <= c["ended"] + 1 for c in schedule)  # noqa: E731
        assert all(during(m["t"]) for m in lost), [m for m in lost if not during(m["t"])][:5]
