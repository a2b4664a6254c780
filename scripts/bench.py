#!/usr/bin/env python3
"""Reproduces docs/BENCHMARKS.md: the disk's own rates (fio) and `ferrocket bench` for 1 KiB
messages under ASYNC_FLUSH and SYNC_FLUSH, each the median of --runs runs on a fresh broker.

Usage: scripts/bench.py [--runs 3] [--seconds 10] [--concurrency 32]   (needs fio on the PATH)
Prints a Markdown table. Standard library only.
"""
import argparse
import contextlib
import json
import pathlib
import re
import shutil
import statistics
import subprocess
import tempfile
import time

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
def fresh_broker(config=""):
    """A `ferrocket standalone` on a new data directory with `config` (TOML); yields (process,
    address) and removes everything afterwards."""
    data = pathlib.Path(tempfile.mkdtemp(prefix="ferrocket-bench-", dir="/var/tmp"))
    (data / "bench.toml").write_text(config)
    broker = subprocess.Popen([str(BIN), "standalone", "--config", str(data / "bench.toml"), "--listen", "127.0.0.1:0",
                               "--data-dir", str(data / "d")], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        yield broker, broker.stdout.readline().split()[1]
    finally:
        broker.terminate()
        broker.wait(timeout=30)
        shutil.rmtree(data, ignore_errors=True)


def bench_once(flush, mode, seconds, concurrency, batch, fill_seconds=0):
    """One run on a fresh broker. For receives, the backlog is first filled with batched sends for
    `fill_seconds`, which writes far more than a receive run can drain."""
    with fresh_broker(f'flush_disk_type = "{flush}"\n') as (broker, addr):
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

def main():
    p = argparse.ArgumentParser()
    p.add_argument("--memory-only", action="store_true", help="only the 100,000 open transactions measurement")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=int, default=10)
    p.add_argument("--concurrency", type=int, default=32)
    a = p.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ferrocket"], cwd=ROOT, check=True)
    if a.memory_only:
        return print_memory()
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
            med = sorted(runs, key=lambda r: r["msgs_per_sec"])[len(runs) // 2]
            rates = ", ".join(f"{r['msgs_per_sec']:.0f}" for r in runs)
            print(f"| {flush} | {side} | {batch} | {med['msgs_per_sec']:.0f} | {med['mib_per_sec']:.1f} | "
                  f"{med['p50_ms']:.2f} | {med['p99_ms']:.2f} | {med['p999_ms']:.2f} | {med['broker_cpu_us_per_msg']:.1f} | {rates} |",
                  flush=True)
    print_memory()


def print_memory():
    idle, sent, later, listed = open_transactions_memory()
    print(f"\nbroker memory, MiB (anonymous / total resident / peak total resident): idle {idle[0]:.0f} / {idle[1]:.0f} / {idle[2]:.0f}; "
          f"after 100,000 open transactions {sent[0]:.0f} / {sent[1]:.0f} / {sent[2]:.0f}; "
          f"20 s later, check scan running {later[0]:.0f} / {later[1]:.0f} / {later[2]:.0f} "
          f"(still open: {listed['open']}, oldest {listed['oldest_age_ms'] / 1000:.0f} s)")


if __name__ == "__main__":
    main()
