"""The peer harness of docs/BENCHMARKS.md (`scripts/bench.py --peers`) against each system it
compares: a short produce and a drain of what was produced through `peer-bench`, on servers started
the way the benchmark starts them. Figures are not asserted (benchmarks, not timed tests); that
every system is reached, acknowledges every publish and delivers every message back is."""
import pathlib
import shutil
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "scripts"))
import bench  # noqa: E402

SERVERS = {"ferrocket": bench.BIN, "nats": "nats-server", "rabbitmq": bench.PEER_PACKAGES["rabbitmq"][1]}


@pytest.mark.parametrize("system", list(SERVERS))
def test_peer_bench_produces_and_drains_on_every_system(system):
    if not shutil.which(str(SERVERS[system])):
        pytest.skip(f"{SERVERS[system]} is not installed (./scripts/test installs it)")
    assert bench.PEER_BENCH.exists(), "peer-bench is not built: ./scripts/test builds it"
    with bench.peer_server(system) as (addr, _pid):
        sent = bench.peer_bench(system, addr, "--mode", "produce", "--concurrency", "4", "--batch", "4",
                                "--duration", "1s")["produce"]
        assert sent["messages"] > 0 and sent["errors"] == 0, sent
        got = bench.peer_bench(system, addr, "--mode", "consume", "--concurrency", "4",
                               "--messages", str(sent["messages"]), "--duration", "60s")["consume"]
        assert got["errors"] == 0, got
        assert got["messages"] >= sent["messages"], f"{system}: {got['messages']} of {sent['messages']} delivered"


def test_peer_bench_sends_to_ferrocket_over_remoting():
    """The harness's Remoting row: Ferrocket's Remoting port acknowledges every send, one message and
    a batch per call (broker/tests/bench.rs checks that they are delivered)."""
    assert bench.PEER_BENCH.exists(), "peer-bench is not built: ./scripts/test builds it"
    with bench.peer_server("ferrocket-remoting") as (addr, _pid):
        for batch in ("1", "4"):
            sent = bench.peer_bench("ferrocket-remoting", addr, "--mode", "produce", "--concurrency", "4",
                                    "--batch", batch, "--duration", "1s")["produce"]
            assert sent["messages"] > 0 and sent["errors"] == 0, sent
