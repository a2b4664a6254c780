#!/usr/bin/env python3
"""Reproduces docs/BENCHMARKS.md: the disk's own rates (fio) and `ferrocket bench` for 1 KiB
messages under ASYNC_FLUSH and SYNC_FLUSH, each the median of --runs runs on a fresh broker.

Usage: scripts/bench.py [--runs 3] [--seconds 10] [--concurrency 32]   (needs fio on the PATH)
       scripts/bench.py --delivery-only [--runs 3]   (needs the e2e client drivers: run ./scripts/test once)
       scripts/bench.py --replication-only [--runs 3] [--seconds 10]
       scripts/bench.py --remoting-only [--runs 3] [--seconds 10]   (Ferrocket against Apache RocketMQ
           5.3.3 from its jars, over Remoting with the Java load generator; needs ./scripts/test once)
       scripts/bench.py --grpc-reference [--runs 3] [--seconds 10] [--e2e-rate N ...]   (the same two
           over gRPC, both driven by `ferrocket bench`; needs ./scripts/test once)
       scripts/bench.py --inflight-only GROUPS PER_GROUP [--runs 3] [--compare-with BINARY]
       scripts/bench.py --consume-only [--runs 3] [--compare-with BINARY]
       scripts/bench.py --transactions-only COMMITTED OPEN [--runs 3] [--compare-with BINARY]
       e2e/clients/python/.venv/bin/python scripts/bench.py --failover-only [--runs 10]   (kill -9 of a SYNC
           master under three controllers, on the e2e harness: needs ./scripts/test once, and that venv)
       scripts/bench.py --peers [--runs 3] [--seconds 8]   (Ferrocket against NATS JetStream and
           RabbitMQ from Debian, all driven by bench/peers' `peer-bench`; installs the two servers
           with apt-get if they are missing)
Prints a Markdown table. Standard library only, except --failover-only (the e2e venv's grpc).
"""
import argparse
import contextlib
import json
import os
import pathlib
import re
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
BIN = ROOT / "target" / "release" / "ferrocket"


def fio(tmp):
    """Sequential 1 MiB writes (MiB/s) and 4 KiB write+fsync operations per second."""
    def run(*args):
        out = subprocess.run(["fio", "--output-format=json", f"--directory={tmp}", "--size=512m", *args],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["jobs"][0]["write"]
    seq = run("--name=seq", "--rw=write", "--bs=1m", "--end_fsync=1", "--ioengine=psync")
    sync = run("--name=fsync", "--rw=write", "--bs=4k", "--fsync=1", "--runtime=10", "--time_based", "--ioengine=psync")
    return seq["bw"] / 1024, sync["iops"]


def cpu_seconds(pid):
    """User + system CPU time of a process, s (from /proc)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100


@contextlib.contextmanager
def fresh_broker(config="", mode="standalone", binary=None):
    """A `ferrocket <mode>` (standalone by default; `binary`, by default this tree's) on a new data
    directory with `config` (TOML); yields (process, address) and removes everything afterwards."""
    data = pathlib.Path(tempfile.mkdtemp(prefix="ferrocket-bench-", dir="/var/tmp"))
    (data / "bench.toml").write_text(config)
    broker = subprocess.Popen([str(binary or BIN), mode, "--config", str(data / "bench.toml"), "--listen", "127.0.0.1:0",
                               "--data-dir", str(data / "d")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield broker, broker.stdout.readline().split()[1]
    finally:
        broker.terminate()
        broker.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def bench_once(flush, mode, seconds, concurrency, batch, fill_seconds=0, binary=None):
    """One run on a fresh broker (`binary`, by default this tree's; the load always comes from this
    tree's `ferrocket bench`). For receives, the backlog is first filled with batched sends for
    `fill_seconds`, which writes far more than a receive run can drain."""
    with fresh_broker(f'flush_disk_type = "{flush}"\n', binary=binary) as (broker, addr):
        def bench(m, s, b=batch):
            out = subprocess.run([str(BIN), "bench", "--server", addr, "--mode", m, "--duration", f"{s}s",
                                  "--concurrency", str(concurrency), "--batch", str(b), "--json"],
                                 capture_output=True, text=True, check=True).stdout
            return json.loads(out)
        if fill_seconds:
            bench("produce", fill_seconds, 16)  # a backlog for the receive-only run
        before = cpu_seconds(broker.pid)
        r = bench(mode, seconds)
        side = r["consume"] if mode == "consume" else r["produce"]
        side["broker_cpu_us_per_msg"] = (cpu_seconds(broker.pid) - before) * 1e6 / max(side["messages"], 1)
        return r


def rss_mib(pid):
    """Anonymous resident memory (heap: what the broker allocates), total resident memory (which
    also counts the CommitLog and IndexFile pages the broker has touched through its memory maps:
    file-backed page cache, shared with the kernel) and peak total resident memory, MiB."""
    status = dict(l.split(":", 1) for l in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in l)
    return tuple(int(status[k].split()[0]) / 1024 for k in ("RssAnon", "VmRSS", "VmHWM"))


def open_transactions_memory(n=100_000, watch_seconds=20):
    """Broker memory with `n` open transactions, right after sending them and again after the
    check-back scan has run (default timings: checks start 6 s after each half message)."""
    with fresh_broker() as (broker, addr):
        idle = rss_mib(broker.pid)
        subprocess.run([str(BIN), "bench", "--server", addr, "--mode", "tx-open", "--batch", "16", "--messages", str(n),
                        "--duration", "60s", "--topic", "txopen", "--json"], capture_output=True, check=True)
        after_send = rss_mib(broker.pid)
        time.sleep(watch_seconds)  # a measurement window, not synchronisation: let the scan run
        listed = json.loads(subprocess.run([str(BIN), "tx", "list", "--server", addr, "--json"],
                                           capture_output=True, text=True, check=True).stdout)
        return idle, after_send, rss_mib(broker.pid), listed

CLIENTS = ROOT / "e2e" / "clients"
DRIVERS = {"python": [str(CLIENTS / "python" / ".venv" / "bin" / "python"), str(CLIENTS / "python" / "client.py")],
           "node": ["node", str(CLIENTS / "node" / "client.js")]}


def bench_cli(addr, *args):
    out = subprocess.run([str(BIN), "bench", "--server", addr, "--json", *args], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def push_consumer_once(kind, n):
    """One official-client PushConsumer (the e2e driver: the listener prints each message and
    returns SUCCESS) draining a backlog of `n` messages; msgs/s between its first and last message.
    The peer in the same run: `ferrocket bench` receive+ack (raw gRPC, 32 receivers) on an equal backlog."""
    with fresh_broker() as (broker, addr):
        subprocess.run([*DRIVERS["python"], "send", "--endpoint", addr, "--topic", "push", "--count", str(n),
                        "--pad", "1000"], capture_output=True, check=True)
        before = cpu_seconds(broker.pid)
        out = subprocess.run([*DRIVERS[kind], "push", "--endpoint", addr, "--topic", "push", "--group", "g",
                              "--count", str(n), "--timeout", "300"], capture_output=True, text=True, check=True).stdout
        times = sorted(json.loads(line)["t"] for line in out.splitlines() if line.startswith("{"))
        assert len(times) >= n, f"{kind} push consumer got {len(times)} of {n}"
        cpu = (cpu_seconds(broker.pid) - before) * 1e6 / n
        bench_cli(addr, "--mode", "produce", "--topic", "peer", "--messages", str(n), "--batch", "16", "--duration", "120s")
        peer = bench_cli(addr, "--mode", "consume", "--topic", "peer", "--messages", str(n), "--duration", "120s")
        return (n - 1) / (times[-1] - times[0]), cpu, peer["consume"]["msgs_per_sec"]


def metric_buckets(text, name):
    """Cumulative histogram buckets [(le, count)] of `name` from Prometheus text."""
    out = []
    for m in re.finditer(rf'^{name}_bucket\{{le="([^"]+)"\}} (\d+)', text, re.M):
        out.append((float(m.group(1)), int(m.group(2))))
    return out


def bucket_quantile(buckets, q):
    """The upper bound of the bucket holding quantile `q` (what a Prometheus histogram can say)."""
    total = buckets[-1][1]
    return next(le for le, c in buckets if c >= q * total)


def delay_lateness_once(rate, seconds):
    """`lateness` on a fresh broker."""
    metrics_port = free_port()
    with fresh_broker(f'metrics_listen = "127.0.0.1:{metrics_port}"\n') as (broker, addr):
        return lateness(addr, metrics_port, rate, seconds)


def lateness(addr, metrics_port, rate, seconds, lead=30):
    """`rate * seconds` DELAY messages due evenly over `seconds`, starting `lead` s after they are
    sent (all are stored before the first is due); 32 receivers measure receive time minus due time.
    Also the broker's own lateness histogram (timer write minus due; all its deliveries so far)."""
    n = rate * seconds
    sent = bench_cli(addr, "--mode", "produce", "--topic", "delay", "--messages", str(n), "--batch", "16",
                     "--delay-after", f"{lead}s", "--delay-spread", f"{seconds}s", "--duration", f"{lead}s")
    assert sent["produce"]["messages"] >= n and sent["seconds"] < lead - 2, f"scheduling took too long: {sent}"
    got = bench_cli(addr, "--mode", "consume", "--topic", "delay", "--messages", str(n),
                    "--duration", f"{lead + seconds + 30}s")["consume"]
    buckets = metric_buckets(scrape(metrics_port), "ferrocket_timer_lateness_ms")
    return got, (bucket_quantile(buckets, 0.5), bucket_quantile(buckets, 0.99))


def scrape(port):
    """The Prometheus text a broker serves on 127.0.0.1:`port`."""
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def by_rate(runs):
    """(the median run, all runs slowest first) of bench reports, by msgs/s."""
    ordered = sorted(runs, key=lambda r: r["msgs_per_sec"])
    return ordered[len(ordered) // 2], ordered


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mib(path):
    """Size of a file, or of the files under a directory, MiB."""
    path = pathlib.Path(path)
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 2**20


def start_ready(binary, data):
    """Starts a standalone broker on `data`; (process, seconds until its `ready` line, its address)."""
    t0 = time.monotonic()
    p = subprocess.Popen([str(binary or BIN), "standalone", "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    addr = p.stdout.readline().split()[1]
    return p, time.monotonic() - t0, addr


def after_kill9(broker, binary, data, probe=lambda process, addr: None):
    """SIGKILLs `broker`, starts `binary` again on `data` and returns (seconds until its `ready`
    line, what `probe(process, address)` returns), stopping it afterwards."""
    broker.kill()
    broker.wait(timeout=60)
    again, seconds, addr = start_ready(binary, data)
    try:
        return seconds, probe(again, addr)
    finally:
        again.terminate()
        again.wait(timeout=120)


def systems_of(compare_with):
    """(name, binary) of this tree's broker, and of `compare_with`'s if given."""
    return [("this tree", None)] + ([(str(compare_with), compare_with)] if compare_with else [])


def scheduled_scale(n, binary=None):
    """With `n` messages (128-byte bodies) scheduled an hour ahead, due over 10 minutes: broker
    memory right after and after two state snapshots; lateness at 10,000 due/s for 10 s while they
    stay pending; state.json and timer log sizes; restart to `ready` after kill -9 (replaying what
    followed the last snapshot) and after a clean stop, and memory once restarted."""
    port = free_port()
    with fresh_broker(f'metrics_listen = "127.0.0.1:{port}"\n', binary=binary) as (broker, addr):
        data = pathlib.Path(broker.args[broker.args.index("--data-dir") + 1])
        r = {"idle": rss_mib(broker.pid)}
        sent = bench_cli(addr, "--mode", "produce", "--topic", "sched", "--messages", str(n), "--batch", "16",
                         "--size", "128", "--delay-after", "1h", "--delay-spread", "10m", "--duration", "3600s")
        r["send_rate"] = sent["produce"]["msgs_per_sec"]
        r["after"] = rss_mib(broker.pid)
        time.sleep(12)  # a measurement window, not synchronisation: two snapshot periods pass
        r["later"] = rss_mib(broker.pid)
        r["lateness"] = lateness(addr, port, 10_000, 10)
        r["during"] = rss_mib(broker.pid)
        r["state_mib"], r["timerlog_mib"] = mib(data / "config" / "state.json"), mib(data / "timerlog")
        r["commitlog_mib"] = mib(data / "commitlog")
        r["restart_kill9_s"], r["restarted"] = after_kill9(broker, binary, data, lambda p, _: rss_mib(p.pid))
        again, r["restart_clean_s"], _ = start_ready(binary, data)
        again.terminate()
        again.wait(timeout=120)
        return r


def print_scheduled(n, runs):
    """`scheduled_scale` rows."""
    print(f"| run | send msgs/s | heap MiB after / +12 s / during lateness run / after restart | lateness p50 / p99 / max ms "
          f"(broker p99 bound) | state.json MiB | timer log MiB | CommitLog MiB | restart after kill -9 / clean stop, s |")
    print("|---|---|---|---|---|---|---|---|")
    for i in range(runs):
        r = scheduled_scale(n)
        got, (_, b99) = r["lateness"]
        l = got["lateness_ms"]
        print(f"| {i + 1} | {r['send_rate']:.0f} | {r['after'][0]:.0f} / {r['later'][0]:.0f} / {r['during'][0]:.0f} / "
              f"{r['restarted'][0]:.0f} | {l[0]:.0f} / {l[1]:.0f} / {l[3]:.0f} (≤ {b99:g}) of {got['messages']} | "
              f"{r['state_mib']:.1f} | {r['timerlog_mib']:.0f} | {r['commitlog_mib']:.0f} | "
              f"{r['restart_kill9_s']:.2f} / {r['restart_clean_s']:.2f} |", flush=True)


def state_writes(data, seconds):
    """Bytes a broker on `data` writes to its state files per second over `seconds`: what each
    progress and transaction log file grows by, and `config/state.json` whole each time it is
    replaced (sampled every 0.2 s; a checkpoint comes every 5 s)."""
    state, prev, written = data / "config" / "state.json", None, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        cur = {}
        for f in [*data.glob("progress/*.log"), *data.glob("transactions/*.log")]:
            with contextlib.suppress(FileNotFoundError):
                cur[f"{f.parent.name}/{f.name}"] = f.stat().st_size
        with contextlib.suppress(FileNotFoundError):
            st = state.stat()
            cur[f"state.json@{st.st_mtime_ns}"] = st.st_size  # a new name each time it is replaced
        if prev is not None:
            written += sum(max(0, size - prev.get(name, 0)) for name, size in cur.items())
        prev = cur
        time.sleep(0.2)
    return written / seconds


def inflight_scale(groups, per_group, binary=None, window=20):
    """`groups` consumer groups each receive the same `per_group` messages (128-byte bodies, one
    topic of 8 queues) and ack none (invisible for an hour): groups * per_group deliveries in flight.
    Broker memory before and after; the bytes it writes to its state files per second over
    `window` s idle, then while another group sends, receives and acks 1,000 messages/s; the sizes
    of those files; restart to `ready` after kill -9, memory once restarted, and what a group
    receives then (its messages are still in flight: nothing)."""
    with fresh_broker(binary=binary) as (broker, addr):
        data = pathlib.Path(broker.args[broker.args.index("--data-dir") + 1])
        r = {"idle": rss_mib(broker.pid)}
        bench_cli(addr, "--mode", "produce", "--topic", "flight", "--messages", str(per_group), "--batch", "16",
                  "--size", "128", "--duration", "600s")
        t0 = time.monotonic()
        for g in range(groups):
            got = bench_cli(addr, "--mode", "consume", "--topic", "flight", "--group", f"flight-{g}", "--no-ack",
                            "--invisible", "1h", "--messages", str(per_group), "--concurrency", "8", "--duration", "600s")
            assert got["consume"]["messages"] >= per_group, got
        r["receive_rate"] = groups * per_group / (time.monotonic() - t0)
        r["after"] = rss_mib(broker.pid)
        time.sleep(6)  # a measurement window, not synchronisation: a checkpoint (5 s) writes it all
        r["write_idle"] = state_writes(data, window)  # nothing changes
        trickle = threading.Thread(target=bench_cli, args=(addr, "--mode", "both", "--topic", "trickle", "--rate", "1000",
                                                           "--size", "128", "--concurrency", "4", "--duration", f"{window + 2}s"))
        trickle.start()
        r["write_trickle"] = state_writes(data, window)
        trickle.join()
        r["later"] = rss_mib(broker.pid)
        r["state_mib"] = mib(data / "config" / "state.json")
        r["progress_mib"] = mib(data / "progress")
        def probe(again, addr):
            got = bench_cli(addr, "--mode", "consume", "--topic", "flight", "--group", "flight-0", "--no-ack",
                            "--invisible", "1h", "--concurrency", "8", "--duration", "3s")
            return rss_mib(again.pid), got["consume"]["messages"]
        r["restart_kill9_s"], (r["restarted"], r["received_after_restart"]) = after_kill9(broker, binary, data, probe)
        return r


def print_inflight(groups, per_group, runs, compare_with=None):
    """`inflight_scale` rows, this tree's broker and (interleaved) `compare_with`'s."""
    print(f"{groups} groups x {per_group} messages in flight\n")
    print("| broker | run | receive msgs/s | heap MiB idle / in flight / after the trickle / restarted | heap B per in-flight | "
          "state writes KiB/s idle / at 1,000 acks/s | state.json MiB | progress log MiB | restart after kill -9, s | "
          "received after restart |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    systems = systems_of(compare_with)
    for i in range(runs):
        for name, binary in systems:
            r = inflight_scale(groups, per_group, binary)
            per = (r["after"][0] - r["idle"][0]) * 2**20 / (groups * per_group)
            print(f"| {name} | {i + 1} | {r['receive_rate']:.0f} | {r['idle'][0]:.0f} / {r['after'][0]:.0f} / "
                  f"{r['later'][0]:.0f} / {r['restarted'][0]:.0f} | {per:.0f} | {r['write_idle'] / 1024:.1f} / "
                  f"{r['write_trickle'] / 1024:.1f} | {r['state_mib']:.1f} | {r['progress_mib']:.1f} | "
                  f"{r['restart_kill9_s']:.2f} | {r['received_after_restart']} |", flush=True)


CONSUME_CASES = (("1 group on 1 topic", 1, 0), ("100 groups on 100 topics", 100, 0),
                 ("FIFO: 1 group on 1 topic, 1,000 message groups", 1, 1_000))


def consume_once(topics, message_groups, binary=None, n=200_000):
    """One fresh broker (`binary`, by default this tree's): `n` 1 KiB messages sent in batches of
    16 over `topics` topics (FIFO over `message_groups` message groups if not 0), then drained by
    32 receivers with one consumer group per topic (FIFO groups then). Returns (receive+ack
    msgs/s, broker CPU µs per message received), or None for the rate if the run did not drain all."""
    with fresh_broker(binary=binary) as (broker, addr):
        args = ["--topic", "drain", "--topics", str(topics)]
        if message_groups:
            args += ["--message-groups", str(message_groups)]
        bench_cli(addr, "--mode", "produce", *args, "--batch", "16", "--messages", str(n), "--duration", "120s")
        before = cpu_seconds(broker.pid)
        got = bench_cli(addr, "--mode", "consume", *args, "--messages", str(n), "--duration", "120s")["consume"]
        cpu = (cpu_seconds(broker.pid) - before) * 1e6 / max(got["messages"], 1)
        return (got["msgs_per_sec"] if got["messages"] >= n else None), cpu


def print_consume(runs, compare_with=None):
    """`consume_once` for each of CONSUME_CASES, this tree's broker and (interleaved) `compare_with`'s."""
    systems = systems_of(compare_with)
    results = {(c, name): [] for c in CONSUME_CASES for name, _ in systems}
    for _ in range(runs):
        for case in CONSUME_CASES:
            for name, binary in systems:
                results[(case, name)].append(consume_once(case[1], case[2], binary))
    print("| case | broker | receive+ack msgs/s (median; runs) | broker CPU µs/msg (median) |")
    print("|---|---|---|---|")
    for case in CONSUME_CASES:
        for name, _ in systems:
            rs = results[(case, name)]
            rates = [r for r, _ in rs if r]
            shown = ", ".join(f"{r:,.0f}" if r else "not drained" for r, _ in rs)
            print(f"| {case[0]} | {name} | {f'{statistics.median(rates):,.0f}' if rates else '–'} ({shown}) | "
                  f"{statistics.median(c for _, c in rs):.1f} |", flush=True)


def transactions_scale(committed, open_, binary=None, window=20):
    """A fresh broker (`binary`, by default this tree's): `committed` transactions sent and
    committed, then `open_` half messages left open (128-byte bodies, batches of 16; no producer
    answers their check-backs). Then the bytes written to the state files per second over the
    first `window` s after the sends and over the next `window` s, the sizes of `state.json` and
    the transaction log, heap, and after kill -9 the restart to `ready` and how many transactions
    are open then."""
    with fresh_broker(binary=binary) as (broker, addr):
        data = pathlib.Path(broker.args[broker.args.index("--data-dir") + 1])
        r = {"idle": rss_mib(broker.pid)[0]}
        for mode, n, topic in (("tx", committed, "txdone"), ("tx-open", open_, "txopen")):
            bench_cli(addr, "--mode", mode, "--batch", "16", "--messages", str(n), "--size", "128", "--topic", topic,
                      "--duration", "600s")
        r["heap"] = rss_mib(broker.pid)[0] - r["idle"]
        r["writes"] = state_writes(data, window)
        r["writes_later"] = state_writes(data, window)
        r["state_mib"] = mib(data / "config" / "state.json")
        r["tx_log_mib"] = mib(data / "transactions")
        def open_after(_, addr):
            return json.loads(subprocess.run([str(BIN), "tx", "list", "--server", addr, "--json"],
                                             capture_output=True, text=True, check=True).stdout)["open"]
        r["restart_s"], r["open_after"] = after_kill9(broker, binary, data, open_after)
        return r


def print_transactions(committed, open_, runs, compare_with=None):
    """`transactions_scale` rows, this tree's broker and (interleaved) `compare_with`'s."""
    print(f"{committed:,} committed and {open_:,} open transactions\n")
    print("| broker | run | heap MiB | state file writes KiB/s: first 20 s after the sends / next 20 s | state.json MiB | "
          "transaction log MiB | restart after kill -9, s | open after restart |")
    print("|---|---|---|---|---|---|---|---|")
    systems = systems_of(compare_with)
    for i in range(runs):
        for name, binary in systems:
            r = transactions_scale(committed, open_, binary)
            print(f"| {name} | {i + 1} | {r['heap']:.0f} | {r['writes'] / 1024:,.1f} / {r['writes_later'] / 1024:,.1f} | {r['state_mib']:.1f} | "
                  f"{r['tx_log_mib']:.1f} | {r['restart_s']:.2f} | {r['open_after']:,} |", flush=True)


def topic_spread_once(topics, seconds, store="files"):
    """One fresh broker with the ConsumeQueue store `store` (`files` or `lsm`): `topics` topics of
    8 queues created through the Admin service (timed) and a warm-up batch sent to each, then 32
    senders for `seconds` at batch 1 and again at batch 16, every call to the next topic; broker
    heap after the warm-up and after the runs. With 1 or 100 topics, also receive+ack by one group
    per topic of 200,000 messages sent to them first."""
    port = free_port()
    with fresh_broker(f'metrics_listen = "127.0.0.1:{port}"\nconsume_queue_store = "{store}"\n') as (broker, addr):
        idle = rss_mib(broker.pid)[0]
        r = {"sends": {}}
        # Warm-up: one batch of 16 to every topic, which touches each of its 8 queues, and the
        # dispatcher done creating them, so the measured runs see the steady state rather than
        # the creation of 80,000 ConsumeQueues.
        warm = bench_cli(addr, "--mode", "produce", "--topics", str(topics), "--batch", "16",
                         "--messages", str(16 * topics), "--duration", "300s")
        r["create_s"] = warm["topics"][1] if "topics" in warm else 0.0
        t0 = time.monotonic()
        while not re.search(r"^ferrocket_dispatch_lag_bytes 0$", scrape(port), re.M):
            assert time.monotonic() - t0 < 300, "the dispatcher did not catch up with the warm-up"
            time.sleep(0.5)
        r["warm_dispatch_s"] = time.monotonic() - t0
        r["heap_created"] = rss_mib(broker.pid)[0] - idle
        for batch in (1, 16):
            out = bench_cli(addr, "--mode", "produce", "--topics", str(topics), "--batch", str(batch),
                            "--duration", f"{seconds}s")
            r["sends"][batch] = out["produce"]["msgs_per_sec"]
        r["heap_after"] = rss_mib(broker.pid)[0] - idle
        if topics in (1, 100):
            n = 200_000
            bench_cli(addr, "--mode", "produce", "--topic", "drain", "--topics", str(topics), "--batch", "16",
                      "--messages", str(n), "--duration", "120s")
            got = bench_cli(addr, "--mode", "consume", "--topic", "drain", "--topics", str(topics), "--messages", str(n),
                            "--duration", "120s")["consume"]
            r["receive"] = got["msgs_per_sec"] if got["messages"] >= n else None
        return r


def print_topic_spread(runs, seconds, stores=("files",), counts=(1, 100, 1_000, 10_000)):
    """`topic_spread_once` for each topic count in `counts` and each ConsumeQueue store in
    `stores`, runs interleaved; medians."""
    # 80,000 file ConsumeQueues are 80,000 memory mappings: above Linux's default vm.max_map_count.
    limit = pathlib.Path("/proc/sys/vm/max_map_count")
    if "files" in stores and int(limit.read_text()) < 262_144:
        try:
            limit.write_text("262144")
        except OSError as e:
            print(f"vm.max_map_count is {limit.read_text().strip()} and cannot be raised ({e}): 10,000 topics skipped")
            counts = [c for c in counts if c < 10_000]
    results = {(s, t): [] for s in stores for t in counts}
    for _ in range(runs):
        for t in counts:
            for s in stores:
                results[(s, t)].append(topic_spread_once(t, seconds, s))
    med = statistics.median
    print("| store | topics | queues | create, s (median) | dispatcher catching up after the warm-up, s | send batch 1 msgs/s (median; runs) | batch 16 | receive+ack, one group per topic | heap after the warm-up / after sending, MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (store, t), rs in results.items():
        b1 = [r["sends"][1] for r in rs]
        b16 = [r["sends"][16] for r in rs]
        recv = [r["receive"] for r in rs if r.get("receive")]
        print(f"| {store} | {t:,} | {8 * t:,} | {med([r['create_s'] for r in rs]):.1f} | {med([r['warm_dispatch_s'] for r in rs]):.1f} | {med(b1):.0f} ({', '.join(f'{x:.0f}' for x in b1)}) | "
              f"{med(b16):.0f} ({', '.join(f'{x:.0f}' for x in b16)}) | {f'{med(recv):.0f}' if recv else '–'} | "
              f"{med([r['heap_created'] for r in rs]):.0f} / {med([r['heap_after'] for r in rs]):.0f} |", flush=True)


def replication_once(replication, batch, seconds):
    """Sends for `seconds` (32 senders, `batch` messages per call, 1 KiB) to a master with one
    slave; samples the slave's lag (master's `ferrocket_replication_lag_bytes`) every 100 ms."""
    port = free_port()
    master_cfg = f'replication = "{replication}"\nmetrics_listen = "127.0.0.1:{port}"\n'
    with fresh_broker(master_cfg) as (_, maddr):
        slave_cfg = f'broker_id = 1\nbroker_role = "slave"\nha_master_addr = "{maddr}"\n'
        with fresh_broker(slave_cfg, mode="broker"):
            deadline = time.monotonic() + 30
            while "ferrocket_slaves_in_sync 1" not in scrape(port):
                assert time.monotonic() < deadline, "the slave did not connect"
                time.sleep(0.1)
            lags, done = [], []

            def sample():
                while not done:
                    m = re.search(r'^ferrocket_replication_lag_bytes\{slave="1"\} (\d+)', scrape(port), re.M)
                    if m:
                        lags.append(int(m.group(1)))
                    time.sleep(0.1)
            t = threading.Thread(target=sample)
            t.start()
            try:
                r = bench_cli(maddr, "--mode", "produce", "--batch", str(batch), "--duration", f"{seconds}s")["produce"]
            finally:
                done.append(True)
                t.join()
            return r, lags


def print_replication(runs, seconds):
    print("| replication | batch | msgs/s (median) | p50 ms | p99 ms | runs (msgs/s) | slave lag KiB: median / max of samples |")
    print("|---|---|---|---|---|---|---|")
    for replication in ("async", "sync"):
        for batch in (1, 16):
            rs = sorted((replication_once(replication, batch, seconds) for _ in range(runs)),
                        key=lambda r: r[0]["msgs_per_sec"])
            med, lags = rs[len(rs) // 2]
            rates = ", ".join(f"{r['msgs_per_sec']:.0f}" for r, _ in rs)
            print(f"| {replication} | {batch} | {med['msgs_per_sec']:.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
                  f"{rates} | {statistics.median(lags) / 1024:.0f} / {max(lags) / 1024:.0f} |", flush=True)


def print_delivery(runs):
    print("| client | push consumer msgs/s (median) | runs | broker CPU µs/msg | peer: ferrocket bench receive+ack msgs/s |")
    print("|---|---|---|---|---|")
    for kind, n in (("node", 20_000), ("python", 10_000)):
        rs = sorted((push_consumer_once(kind, n) for _ in range(runs)), key=lambda r: r[0])
        med = rs[len(rs) // 2]
        print(f"| {kind} | {med[0]:.0f} | {', '.join(f'{r[0]:.0f}' for r in rs)} | {med[1]:.1f} | {med[2]:.0f} |", flush=True)
    print("\n| due rate | received | lateness p50 ms | p99 ms | p999 ms | max ms | broker timer p50 / p99 (bucket bound, ms) |")
    print("|---|---|---|---|---|---|---|")
    rs = sorted((delay_lateness_once(10_000, 10) for _ in range(runs)), key=lambda r: r[0]["lateness_ms"][1])
    for got, (b50, b99) in rs:
        l = got["lateness_ms"]
        print(f"| 10,000/s for 10 s | {got['messages']} | {l[0]:.0f} | {l[1]:.0f} | {l[2]:.0f} | {l[3]:.0f} | ≤ {b50:g} / ≤ {b99:g} |",
              flush=True)
    print()
    print_scheduled(1_000_000, 1)


def failover_once(run):
    """One failover on the e2e harness (three controller nameservers, two groups of a SYNC master and
    a slave on 127.0.0.1, the official Python client sending every 5 ms through g-b's master):
    g-a's master is killed with SIGKILL once 100 sends to it were acknowledged. Returns seconds from
    the kill to: the controller's election of the slave (`elected`), the first send the new master
    acknowledges to a probe sending straight to it every 20 ms (`writable`), the nameservers routing
    to it (`routed`), and the official client's first acknowledged send to g-a (`client`: it learns
    routes every 30 s, as RocketMQ's clients do)."""
    import sys
    import uuid
    sys.path.insert(0, str(ROOT / "e2e" / "local"))
    import grpc
    from rocketmq.grpc_protocol import definition_pb2 as pb, service_pb2 as svc, service_pb2_grpc
    import conftest
    import test_failover as fo

    def probe(endpoint, hit):
        stub = service_pb2_grpc.MessagingServiceStub(grpc.insecure_channel(endpoint))
        while not hit:
            props = pb.SystemProperties(message_id=uuid.uuid4().hex.upper(), message_type=pb.NORMAL)
            req = svc.SendMessageRequest(messages=[pb.Message(topic=pb.Resource(name="fo"), system_properties=props,
                                                              body=b"probe")])
            try:
                if stub.SendMessage(req, timeout=1).status.code == pb.OK:
                    hit.append(time.time())
            except grpc.RpcError:
                pass
            time.sleep(0.02)

    with conftest.broker_processes() as factory, tempfile.TemporaryDirectory() as scratch:
        ns, groups = fo.failover_cluster(factory, "sync", controllers=3)
        (old, new), (entry, _) = groups["g-a"], groups["g-b"]
        stream = fo.Stream(entry, "fo", pathlib.Path(scratch) / "stop")
        conftest.wait_for(lambda: len(stream.oks("g-a")) >= 100, 90, "100 acknowledged sends to g-a")
        hit = []
        threading.Thread(target=probe, args=(new.endpoint, hit), daemon=True).start()
        old.kill9()
        killed = time.time()
        t = {}
        while len(t) < 4:
            assert time.time() - killed < 120, f"run {run}: failover incomplete after 120 s: {t}"
            st = conftest.cluster_status(*ns)
            v = next((g for g in st["controller"] if g["broker_name"] == "g-a"), {})
            if "elected" not in t and v.get("master") == new.endpoint:
                t["elected"] = time.time()
            if "routed" not in t and any(b["endpoint"] == new.endpoint and b["registered_role"] == "master"
                                         for b in st["brokers"]):
                t["routed"] = time.time()
            if hit:
                t["writable"] = hit[0]
            if "client" not in t and (acked := stream.oks("g-a", after=killed + 1)):
                t["client"] = acked[0]["t"]
            time.sleep(0.05)
        stream.stop()
        return {k: v - killed for k, v in t.items()}


def print_failover(runs):
    rs = [failover_once(i) for i in range(runs)]
    print("| from the kill -9 of a SYNC master to | median s | max s | runs (s) |")
    print("|---|---|---|---|")
    for key, what in (("elected", "its slave elected by the controller group"),
                      ("writable", "the first send the new master acknowledges"),
                      ("routed", "the nameservers routing to the new master"),
                      ("client", "the official Python client's first acknowledged send to the group")):
        xs = [r[key] for r in rs]
        print(f"| {what} | {statistics.median(xs):.2f} | {max(xs):.2f} | {', '.join(f'{x:.1f}' for x in xs)} |",
              flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--failover-only", action="store_true",
                   help="only failover times over --runs kills of a SYNC master (run with the e2e venv's python)")
    p.add_argument("--memory-only", action="store_true", help="only the 100,000 open transactions measurement")
    p.add_argument("--replication-only", action="store_true",
                   help="only SYNC versus ASYNC replication with one slave")
    p.add_argument("--topics-only", action="store_true",
                   help="only sends spread over 1, 100, 1,000 and 10,000 topics (and receives over 1 and 100 groups)")
    p.add_argument("--stores", nargs="+", default=["files"], choices=["files", "lsm"],
                   help="ConsumeQueue stores that --topics-only measures, interleaved")
    p.add_argument("--topic-counts", nargs="+", type=int, default=[1, 100, 1_000, 10_000],
                   help="topic counts that --topics-only measures")
    p.add_argument("--scheduled-only", type=int, metavar="N",
                   help="only N messages scheduled an hour ahead: memory, lateness while they are pending, restart")
    p.add_argument("--inflight-only", type=int, nargs=2, metavar=("GROUPS", "PER_GROUP"),
                   help="only GROUPS groups with PER_GROUP messages in flight each: memory, state writes, restart "
                        "(with --compare-with, that build's broker too, interleaved)")
    p.add_argument("--consume-only", action="store_true",
                   help="only receive+ack: 1 group on 1 topic, 100 groups on 100 topics, one FIFO group "
                        "(with --compare-with, that build's broker too, interleaved)")
    p.add_argument("--transactions-only", type=int, nargs=2, metavar=("COMMITTED", "OPEN"),
                   help="only COMMITTED committed and OPEN open transactions: state writes, sizes, restart "
                        "(with --compare-with, that build's broker too, interleaved)")
    p.add_argument("--delivery-only", action="store_true",
                   help="only push consumers, delay lateness at 10,000 due/s and memory with 1,000,000 scheduled")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--compare-with", metavar="BINARY",
                   help="only the produce rows, this tree's broker against BINARY (another build), runs interleaved")
    p.add_argument("--flush", nargs="+", default=["async", "sync"], choices=["async", "sync"],
                   help="with --remoting-only: the flush modes to run")
    p.add_argument("--remoting-only", action="store_true",
                   help="only Remoting sends and push consumption, Ferrocket and Apache RocketMQ interleaved")
    p.add_argument("--grpc-reference", action="store_true",
                   help="only gRPC sends, receives, transactions and end-to-end latency, Ferrocket and Apache RocketMQ interleaved")
    p.add_argument("--e2e-rate", type=int, nargs="+", default=[],
                   help="with --grpc-reference: only end-to-end latency, at each of these rates (msgs/s)")
    p.add_argument("--peers", action="store_true",
                   help="only Ferrocket against NATS JetStream and RabbitMQ on one load generator, runs interleaved")
    a = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ferrocket"], cwd=ROOT, check=True)
    if a.peers:
        return print_peers(a.runs, a.seconds)
    if a.failover_only:
        return print_failover(a.runs)
    if a.grpc_reference:
        return print_grpc_reference(a.runs, a.seconds, a.e2e_rate)
    if a.remoting_only:
        return print_remoting(a.runs, a.seconds, a.flush)
    if a.inflight_only:
        return print_inflight(*a.inflight_only, a.runs, a.compare_with and pathlib.Path(a.compare_with))
    if a.transactions_only:
        return print_transactions(*a.transactions_only, a.runs, a.compare_with and pathlib.Path(a.compare_with))
    if a.consume_only:
        return print_consume(a.runs, a.compare_with and pathlib.Path(a.compare_with))
    if a.compare_with:
        return print_comparison(pathlib.Path(a.compare_with), a.runs, a.seconds, a.concurrency)
    if a.memory_only:
        return print_memory()
    if a.topics_only:
        return print_topic_spread(a.runs, a.seconds, a.stores, a.topic_counts)
    if a.scheduled_only:
        return print_scheduled(a.scheduled_only, a.runs)
    if a.delivery_only:
        return print_delivery(a.runs)
    if a.replication_only:
        return print_replication(a.runs, a.seconds)
    tmp = tempfile.mkdtemp(prefix="ferrocket-fio-", dir="/var/tmp")
    try:
        seq_mib, fsync_iops = fio(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"disk (fio, same filesystem): sequential write {seq_mib:.0f} MiB/s, 4 KiB write+fsync {fsync_iops:.0f} ops/s\n")
    print("| flush | side | batch | msgs/s (median) | MiB/s | p50 ms | p99 ms | p999 ms | broker CPU µs/msg | runs (msgs/s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for flush in ("async", "sync"):
        rows = [("send", "produce", 1, 0), ("send", "produce", 16, 0), ("receive+ack", "consume", 32, a.seconds),
                ("tx send+commit", "tx", 1, 0), ("tx send+commit", "tx", 16, 0)]
        for side, mode, batch, fill in rows:
            key = "consume" if mode == "consume" else "produce"
            runs = [bench_once(flush, mode, a.seconds, a.concurrency, batch, fill)[key] for _ in range(a.runs)]
            med, _ = by_rate(runs)
            rates = ", ".join(f"{r['msgs_per_sec']:.0f}" for r in runs)
            print(f"| {flush} | {side} | {batch} | {med['msgs_per_sec']:.0f} | {med['mib_per_sec']:.1f} | "
                  f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} | {med['p999_ms']:.2f} | {med['broker_cpu_us_per_msg']:.1f} | {rates} |",
                  flush=True)
    print_memory()


def print_comparison(other, runs, seconds, concurrency):
    """The produce rows for this tree's broker and `other`, one run of each in turn (so drift on a
    shared machine hits both alike), the same load generator for both; medians of `runs`."""
    print(f"| flush | batch | broker | msgs/s (median) | p99 ms | broker CPU µs/msg | runs (msgs/s) |")
    print("|---|---|---|---|---|---|---|")
    for flush in ("async", "sync"):
        for batch in (1, 16):
            results = {"this tree": [], other.name: []}
            for _ in range(runs):
                results["this tree"].append(bench_once(flush, "produce", seconds, concurrency, batch)["produce"])
                results[other.name].append(bench_once(flush, "produce", seconds, concurrency, batch, binary=other)["produce"])
            for name, rs in results.items():
                med, _ = by_rate(rs)
                rates = ", ".join(f"{r['msgs_per_sec']:.0f}" for r in rs)
                print(f"| {flush} | {batch} | {name} | {med['msgs_per_sec']:.0f} | {med['p99_ms']:.2f} | "
                      f"{med['broker_cpu_us_per_msg']:.1f} | {rates} |", flush=True)


def java_bench(namesrv, **opts):
    """One run of the Java Remoting load generator (e2e/clients/java Bench, client 5.3.3)."""
    target = ROOT / "e2e" / "clients" / "java" / "target"
    cp = f"{target / 'classes-5'}:{(target / 'cp-5.txt').read_text().strip()}"
    args = ["java", "-Xmx1g", "-cp", cp, "io.ferrocket.e2e.Bench", "--namesrv", namesrv]
    for k, v in opts.items():
        args += [f"--{k}", str(v)]
    p = subprocess.run(args, capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise RuntimeError(f"Bench {opts} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])


@contextlib.contextmanager
def remoting_target(system, flush):
    """Yields (Remoting nameserver address, gRPC address, broker pid) of a fresh Ferrocket standalone
    or Apache RocketMQ (nameserver + proxy with its embedded broker) with topic `bench` of 8 queues
    and the TRANSACTION topic `benchtx` of 8."""
    if system == "ferrocket":
        ns, rem = free_port(), free_port()
        config = (f'flush_disk_type = "{flush}"\nremoting_listen = "127.0.0.1:{rem}"\n'
                  f'remoting_namesrv_listen = "127.0.0.1:{ns}"\n')
        with fresh_broker(config) as (broker, addr):
            for topic, ty in (("bench", "normal"), ("benchtx", "transaction")):
                subprocess.run([str(BIN), "topic", "create", topic, "--queues", "8", "--types", ty, "--server", addr],
                               check=True, capture_output=True)
            yield f"127.0.0.1:{ns}", addr, broker.pid
        return
    work = pathlib.Path(tempfile.mkdtemp(prefix="rocketmq-bench-", dir="/var/tmp"))
    ref = reference_module().RocketMQ(work, flush={"async": "ASYNC_FLUSH", "sync": "SYNC_FLUSH"}[flush])
    try:
        ref.start()
        ref.create_topic("bench", queues=8)
        ref.create_topic("benchtx", queues=8, message_type="TRANSACTION")
        yield ref.namesrv, ref.grpc, ref.pids()[0]
    finally:
        ref.stop()
        shutil.rmtree(work, ignore_errors=True)


def remoting_once(system, flush, seconds):
    """Sync sends from 1 and 32 threads, async sends from 8, then a push consumer draining all that
    was sent; each with the broker's CPU µs per message. Fails on a short drain; failed sends are
    counted (`errors`)."""
    rows = {}
    with remoting_target(system, flush) as (namesrv, grpc, pid):
        backlog = 0
        for name, opts in [("sync x1", {"mode": "sync", "threads": 1}), ("sync x32", {"mode": "sync", "threads": 32}),
                           ("async x8", {"mode": "async", "threads": 8})]:
            before = cpu_seconds(pid)
            r = java_bench(namesrv, topic="bench", seconds=seconds, size=1024, **opts)
            r["broker_cpu_us_per_msg"] = (cpu_seconds(pid) - before) * 1e6 / max(r["sent"], 1)
            backlog += r["sent"] + 1  # and the warm-up send that fetched the route
            rows[name] = r
        before = cpu_seconds(pid)
        r = java_bench(namesrv, mode="drain", topic="bench", group="bench-drain", expect=backlog, threads=16)
        r["broker_cpu_us_per_msg"] = (cpu_seconds(pid) - before) * 1e6 / max(r["received"], 1)
        assert r["received"] >= backlog, f"{system} drain: {r['received']} of {backlog}"
        rows["push drain"] = r
        if system != "ferrocket":
            return rows  # the gRPC rows of both systems are --grpc-reference's
        # The same broker over gRPC: `ferrocket bench`, 32 senders of 1 KiB, one message per call.
        before = cpu_seconds(pid)
        g = bench_cli(grpc, "--mode", "produce", "--topic", "bench", "--concurrency", "32", "--size", "1024",
                      "--duration", f"{seconds}s")["produce"]
        rows["gRPC send x32"] = {"rate": g["msgs_per_sec"], "p50_ms": g["p50_ms"], "p99_ms": g["p99_ms"],
                                 "broker_cpu_us_per_msg": (cpu_seconds(pid) - before) * 1e6 / max(g["messages"], 1)}
    return rows


def print_remoting(runs, seconds, flushes):
    """Ferrocket and Apache RocketMQ 5.3.3 over Remoting, one run of each in turn, medians of `runs`."""
    print("| flush | load | system | msgs/s (median) | p50 ms | p99 ms | broker CPU µs/msg | failed sends | runs (msgs/s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for flush in flushes:
        results = {"ferrocket": [], "rocketmq": []}
        for _ in range(runs):
            for system in results:
                results[system].append(remoting_once(system, flush, seconds))
        for load in results["ferrocket"][0]:
            for system, rs in results.items():
                if load not in rs[0]:
                    continue
                rows = sorted((r[load] for r in rs), key=lambda r: r["rate"])
                med = rows[len(rows) // 2]
                rates = ", ".join(f"{r['rate']:.0f}" for r in rows)
                failed = sum(r.get("errors", 0) for r in rows)
                print(f"| {flush} | {load} | {system} | {med['rate']:.0f} | {med.get('p50_ms', 0):.2f} | "
                      f"{med.get('p99_ms', 0):.2f} | {med['broker_cpu_us_per_msg']:.1f} | {failed} | {rates} |", flush=True)


GRPC_SENDS = [("send", 1, 1), ("send", 1, 16), ("send", 32, 1), ("send", 32, 16)]


def grpc_once(system, flush, seconds):
    """Over gRPC with `ferrocket bench`: sends of 1 KiB from 1 and 32 senders, 1 and 16 messages per
    call; 32 receivers (receive+ack) draining all of that; transactional send+commit from 32 senders.
    Each row with the broker's CPU µs per message; the broker's peak RSS at the end."""
    rows = {}
    with remoting_target(system, flush) as (_, addr, pid):
        backlog = 0
        for side, conc, batch in GRPC_SENDS:
            before = cpu_seconds(pid)
            r = bench_cli(addr, "--mode", "produce", "--topic", "bench", "--concurrency", str(conc), "--batch", str(batch),
                          "--duration", f"{seconds}s")["produce"]
            r["cpu"] = (cpu_seconds(pid) - before) * 1e6 / max(r["messages"], 1)
            backlog += r["messages"]
            rows[f"{side} x{conc} batch {batch}"] = r
        before = cpu_seconds(pid)
        r = bench_cli(addr, "--mode", "consume", "--topic", "bench", "--group", "drain", "--messages", str(backlog),
                      "--duration", "120s")["consume"]
        r["cpu"] = (cpu_seconds(pid) - before) * 1e6 / max(r["messages"], 1)
        r["backlog"] = backlog
        rows["receive+ack x32 (drain)"] = r
        before = cpu_seconds(pid)
        r = bench_cli(addr, "--mode", "tx", "--topic", "benchtx", "--duration", f"{seconds}s")["produce"]
        r["cpu"] = (cpu_seconds(pid) - before) * 1e6 / max(r["messages"], 1)
        rows["tx send+commit x32"] = r
        rows["peak RSS MiB"] = rss_mib(pid)[2]
    return rows


def e2e_once(system, rate, seconds):
    """End-to-end latency (send to receive) at `rate` msgs/s from 32 senders to 32 receivers, after
    a 5 s warm-up at the same rate (which also makes the group's first offsets)."""
    with remoting_target(system, "async") as (_, addr, pid):
        bench_cli(addr, "--mode", "both", "--topic", "bench", "--group", "e2e", "--rate", str(rate), "--duration", "5s")
        before = cpu_seconds(pid)
        r = bench_cli(addr, "--mode", "both", "--topic", "bench", "--group", "e2e", "--rate", str(rate),
                      "--duration", f"{seconds}s")
        r["consume"]["cpu"] = (cpu_seconds(pid) - before) * 1e6 / max(r["consume"]["messages"], 1)
        r["consume"]["sent_per_sec"] = r["produce"]["msgs_per_sec"]
        return r["consume"]


def print_grpc_reference(runs, seconds, e2e_rates=()):
    """Ferrocket and Apache RocketMQ 5.3.3 over gRPC, one run of each in turn, medians of `runs`; then
    end-to-end latency at half of the slower system's median rate for 32 single-message senders,
    or only that at each of `e2e_rates` (msgs/s) if given."""
    if e2e_rates:
        for rate in e2e_rates:
            print_e2e(runs, seconds, rate)
        return
    print("| flush | load | system | msgs/s (median) | p50 ms | p99 ms | broker CPU µs/msg | failed calls | runs (msgs/s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    systems = ("ferrocket", "rocketmq")
    x32, peaks = {}, []
    for flush in ("async", "sync"):
        results = {s: [] for s in systems}
        for _ in range(runs):
            for system in systems:
                results[system].append(grpc_once(system, flush, seconds))
        for load in results["ferrocket"][0]:
            if load == "peak RSS MiB":
                continue
            for system, rs in results.items():
                med, rows = by_rate(r[load] for r in rs)
                if flush == "async" and load == "send x32 batch 1":
                    x32[system] = med["msgs_per_sec"]
                rates = ", ".join(f"{r['msgs_per_sec']:.0f}" for r in rows)
                print(f"| {flush} | {load} | {system} | {med['msgs_per_sec']:.0f} | {med['p50_ms']:.2f} | "
                      f"{med['p99_ms']:.2f} | {med['cpu']:.1f} | {sum(r['errors'] for r in rows)} | {rates} |", flush=True)
        for system, rs in results.items():
            peaks.append(f"{flush} {system}: " + ", ".join(f"{r['peak RSS MiB']:.0f}" for r in rs))
    print("\nbroker peak RSS (VmHWM), MiB per run: " + "; ".join(peaks))
    print_e2e(runs, seconds, int(min(x32.values()) / 2))


def print_e2e(runs, seconds, rate):
    """End-to-end latency at `rate` msgs/s, one run of each system in turn; every run is listed."""
    print(f"\n| end-to-end at {rate} msgs/s | system | p50 ms | p99 ms | p999 ms | max ms | sent msgs/s | received msgs/s | broker CPU µs/msg |")
    print("|---|---|---|---|---|---|---|---|---|")
    systems = ("ferrocket", "rocketmq")
    results = {s: [] for s in systems}
    for _ in range(runs):
        for system in systems:
            results[system].append(e2e_once(system, rate, seconds))
    for system, rs in results.items():
        for r in sorted(rs, key=lambda r: r["e2e_ms"][1]):
            e = r["e2e_ms"]
            print(f"| async | {system} | {e[0]:.2f} | {e[1]:.2f} | {e[2]:.2f} | {e[3]:.2f} | {r['sent_per_sec']:.0f} | {r['msgs_per_sec']:.0f} | "
                  f"{r['cpu']:.1f} |", flush=True)


PEER_BENCH = ROOT / "target" / "release" / "peer-bench"
PEER_PACKAGES = {"nats": ("nats-server", "nats-server"), "rabbitmq": ("rabbitmq-server", "/usr/lib/rabbitmq/bin/rabbitmq-server")}


def install_peers():
    """Installs Debian's NATS and RabbitMQ servers if they are missing (as scripts/test installs its
    packages); neither is started as a service: each run starts its own."""
    need = [pkg for pkg, exe in PEER_PACKAGES.values() if not shutil.which(exe)]
    if need:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(sudo + ["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", *need], check=True,
                       capture_output=True, env=env)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "ferrocket-peers"], cwd=ROOT, check=True)


def process_tree(pid):
    """`pid` and its live descendants (RabbitMQ's beam.smp runs under the rabbitmq-server script)."""
    parents = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
    tree = {pid}
    for p in sorted(parents):  # children have higher pids than their parents here (no pid wrap in a run)
        if parents[p] in tree:
            tree.add(p)
    return tree


def tree_cpu_seconds(pid):
    """User + system CPU time of a process and of its live descendants, s."""
    total = 0.0
    for p in process_tree(pid):
        with contextlib.suppress(OSError):
            total += cpu_seconds(p)
    return total


def reference_module():
    """e2e/reference/rocketmq.py (Apache RocketMQ from its jars, and its process helpers)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("rocketmq", ROOT / "e2e" / "reference" / "rocketmq.py")
    rocketmq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rocketmq)
    return rocketmq


@contextlib.contextmanager
def peer_server(system, flush="async"):
    """Yields (address, pid of the process to measure) of a fresh server on loopback with a data
    directory of its own, removed afterwards: Ferrocket standalone with `flush` ("async" or "sync"),
    NATS JetStream (file store), or RabbitMQ (a node of its own, with its own epmd port).
    "ferrocket-remoting" is Ferrocket standalone too, addressed at its Remoting port."""
    if system.startswith("ferrocket"):
        remoting = f"127.0.0.1:{free_port()}"
        config = f'flush_disk_type = "{flush}"\nremoting_listen = "{remoting}"\nremoting_namesrv_listen = "127.0.0.1:{free_port()}"\n'
        with fresh_broker(config) as (broker, addr):
            yield (remoting if system == "ferrocket-remoting" else addr), broker.pid
        return
    work = pathlib.Path(tempfile.mkdtemp(prefix=f"{system}-bench-", dir="/var/tmp"))
    port, env = free_port(), dict(os.environ)
    if system == "nats":
        args = ["nats-server", "-js", "-sd", str(work / "js"), "-a", "127.0.0.1", "-p", str(port)]
    else:
        (work / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{port}\n")
        (work / "enabled_plugins").write_text("[].\n")
        (work / "home").mkdir()
        env.update(HOME=str(work / "home"), RABBITMQ_NODENAME=f"bench{port}@localhost", RABBITMQ_CONF_ENV_FILE="/dev/null",
                   RABBITMQ_MNESIA_BASE=str(work / "mnesia"), RABBITMQ_LOG_BASE=str(work / "log"),
                   RABBITMQ_CONFIG_FILE=str(work / "rabbitmq.conf"), RABBITMQ_ENABLED_PLUGINS_FILE=str(work / "enabled_plugins"),
                   RABBITMQ_DIST_PORT=str(free_port()), ERL_EPMD_PORT=str(free_port()))
        args = [PEER_PACKAGES["rabbitmq"][1]]
    log = work / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        reference_module().wait_port(port, server, log, 60)
        yield f"127.0.0.1:{port}", server.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, 15)
        server.wait(timeout=30)
        if system == "rabbitmq":  # epmd daemonises out of the process group
            subprocess.run(["epmd", "-kill"], env=env, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def peer_bench(system, addr, *args, queue_type="classic"):
    """One run of `peer-bench` against `system` at `addr`; its JSON report. "ferrocket-remoting" is
    `--system ferrocket --protocol remoting` (sends only)."""
    extra = ["--queue-type", queue_type] if system == "rabbitmq" else []
    if system == "ferrocket-remoting":
        system, extra = "ferrocket", ["--protocol", "remoting"]
    out = subprocess.run([str(PEER_BENCH), "--system", system, "--server", addr, "--topic", "bench", *extra, *args],
                         capture_output=True, text=True, check=True, timeout=300).stdout
    return json.loads(out)


PEER_SENDS = [("send x32, 1 in flight", 32, 1), ("send x32, 16 in flight", 32, 16)]
PEER_DRAIN = 200_000


def peer_once(system, seconds):
    """The rows of docs/BENCHMARKS.md's peer table for one system: after a 2 s warm-up, 32 publishers
    awaiting each acknowledgement with 1 and 16 in flight (Ferrocket: a batch of 16 per call), then 32
    consumers draining 200,000 of that backlog (or all of it, if less); on a fresh server, SYNC_FLUSH (Ferrocket) or a quorum
    queue (RabbitMQ) from 32 publishers and from 1 (NATS 2.9 has no per-message sync). Each row
    carries the server's CPU µs per message; "memory MiB" is the largest process's (peak resident,
    anonymous resident) after the drain. "ferrocket-remoting" (Ferrocket with the load over Remoting,
    as the Java producer sends) has the send rows only."""
    rows = {}

    def measure(name, addr, pid, *args, **kw):
        before = tree_cpu_seconds(pid)
        r = peer_bench(system, addr, *args, **kw)
        side = r["produce"] or r["consume"]
        side["cpu"] = (tree_cpu_seconds(pid) - before) * 1e6 / max(side["messages"], 1)
        rows[name] = side
        return side

    def memory(pid):
        """(peak resident, anonymous resident now) MiB of the largest process of the server; the
        first counts the file pages it maps (Ferrocket's CommitLog), the second only its heap."""
        sizes = []
        for p in process_tree(pid):
            with contextlib.suppress(OSError):
                anon, _total, peak = rss_mib(p)
                sizes.append((peak, anon))
        return max(sizes, default=(0, 0))

    with peer_server(system) as (addr, pid):
        backlog = peer_bench(system, addr, "--mode", "produce", "--concurrency", "32", "--duration", "2s")["produce"]["messages"]
        for name, conc, window in PEER_SENDS:
            backlog += measure(f"async: {name}", addr, pid, "--mode", "produce", "--concurrency", str(conc),
                               "--batch", str(window), "--duration", f"{seconds}s")["messages"]
        if system != "ferrocket-remoting":  # its load generator only sends
            want = min(backlog, PEER_DRAIN)
            drained = measure("async: receive+ack x32, drain", addr, pid, "--mode", "consume", "--concurrency", "32",
                              "--messages", str(want), "--duration", "120s")
            assert drained["messages"] >= want, f"{system} drained {drained['messages']} of {want}"
        rows["memory MiB"] = memory(pid)
    if system == "nats":
        return rows
    queue_type = "quorum" if system == "rabbitmq" else "classic"
    with peer_server(system, "sync") as (addr, pid):
        for conc in (32, 1):
            measure(f"sync: send x{conc}, 1 in flight", addr, pid, "--mode", "produce", "--concurrency", str(conc),
                    "--duration", f"{seconds}s", queue_type=queue_type)
    return rows


def print_peers(runs, seconds):
    """Ferrocket, NATS JetStream and RabbitMQ on the same generator, one run of each in turn (so
    drift on a shared machine hits all alike), medians of `runs`, with Ferrocket's rate over NATS's."""
    install_peers()
    systems = ("ferrocket", "ferrocket-remoting", "nats", "rabbitmq")
    results = {s: [] for s in systems}
    for _ in range(runs):
        for system in systems:
            results[system].append(peer_once(system, seconds))
    print("| load | system | msgs/s (median) | p50 ms | p99 ms | server CPU µs/msg | Ferrocket / this | failed calls | runs (msgs/s) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for load in results["ferrocket"][0]:
        if load == "memory MiB":
            continue
        medians = {}
        for system, rs in results.items():
            if load not in rs[0]:
                continue
            med, rows = by_rate(r[load] for r in rs)
            medians[system] = med
            ratio = medians["ferrocket"]["msgs_per_sec"] / max(med["msgs_per_sec"], 1e-9)
            rates = ", ".join(f"{r['msgs_per_sec']:.0f}" for r in rows)
            print(f"| {load} | {system} | {med['msgs_per_sec']:.0f} | {med['p50_ms']:.2f} | {med['p99_ms']:.2f} | "
                  f"{med['cpu']:.1f} | {ratio:.2f} | {sum(r['errors'] for r in rows)} | {rates} |", flush=True)
    print("\nlargest server process after the drain, MiB per run (peak resident VmHWM / anonymous resident RssAnon): " + "; ".join(
        f"{s}: " + ", ".join("{:.0f} / {:.0f}".format(*r["memory MiB"]) for r in rs) for s, rs in results.items()))


def print_memory():
    idle, sent, later, listed = open_transactions_memory()
    print(f"\nbroker memory, MiB (anonymous / total resident / peak total resident): idle {idle[0]:.0f} / {idle[1]:.0f} / {idle[2]:.0f}; "
          f"after 100,000 open transactions {sent[0]:.0f} / {sent[1]:.0f} / {sent[2]:.0f}; "
          f"20 s later, check scan running {later[0]:.0f} / {later[1]:.0f} / {later[2]:.0f} "
          f"(still open: {listed['open']}, oldest {listed['oldest_age_ms'] / 1000:.0f} s)")


if __name__ == "__main__":
    main()
