"""The differential suite's targets: one test body runs against Ferrocket and against Apache
RocketMQ 5.3.3 (rocketmq.py), both with their default settings except the few in `SHARED`, and
with the same official clients.

Each target is started once per session and serves every test; tests keep apart by their own
topic and group names, created up front on both (the reference proxy does not auto-create topics
over gRPC, and remembers a route it did not find for a while).

`FERROCKET_REFERENCE=0` skips the reference target (Ferrocket's half still runs).
"""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import rocketmq  # noqa: E402


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The process fixtures and client runners of e2e/local, shared rather than copied.
local = _load("ferrocket_local_conftest", HERE.parent / "local" / "conftest.py")
BIN, Background, client_args, java, java_cmd, run_client, wait_for = (
    local.BIN, local.Background, local.client_args, local.java, local.java_cmd, local.run_client, local.wait_for)

# Settings both targets run with, where a default would make a test wait long: check-backs of an
# open transaction every 5 s (both default to 30 s) after it is 6 s old (both defaults).
SHARED = {"check_interval_ms": 5000}


class Ferrocket:
    """`ferrocket standalone` with its defaults (min invisible time 10 s as RocketMQ's)."""

    name = "ferrocket"

    def __init__(self, workdir):
        self.broker = local.Broker(pathlib.Path(workdir) / "data", min_invisible_ms=10_000,
                                   transaction_check_interval_ms=SHARED["check_interval_ms"])

    def start(self):
        self.broker.start()
        self.endpoint, self.namesrv = self.broker.endpoint, self.broker.namesrv
        return self

    def create_topic(self, name, queues=4, message_type="NORMAL"):
        self._cli("topic", "create", name, "--queues", str(queues), "--types", message_type.lower())

    def create_group(self, name, fifo=False, max_attempts=None):
        args = ["group", "create", name, *(["--fifo"] if fifo else [])]
        self._cli(*args, *(["--max-delivery-attempts", str(max_attempts)] if max_attempts else []))

    def queue_ranges(self, topic):
        return local.queue_ranges(self.broker, topic)

    def _cli(self, *args):
        subprocess.run([str(BIN), *args, "--server", self.endpoint], check=True, capture_output=True, timeout=30)

    def stop(self):
        self.broker.stop()


class Reference:
    """Apache RocketMQ 5.3.3: nameserver plus proxy in local mode, SQL92 filtering and recall
    switched on (`enablePropertyFilter` and `recallMessageEnable`, both off by default: without
    them the reference refuses SQL92 subscriptions and answers a recall 'operation is
    forbidden'), the proxy's caches refreshed every second."""

    name = "rocketmq"

    def __init__(self, workdir):
        # The proxy caches routes, topic and group configs for 20 s: a topic or group created by a
        # test is seen within a second instead.
        refresh = {f"{c}CacheRefreshSeconds": 1 for c in ("topicRouteService", "topicConfig", "subscriptionGroupConfig")}
        self.ref = rocketmq.RocketMQ(workdir, proxy_conf=refresh, transactionCheckInterval=SHARED["check_interval_ms"],
                                     enablePropertyFilter="true", recallMessageEnable="true")

    def start(self):
        self.ref.start()
        self.endpoint, self.namesrv = self.ref.grpc, self.ref.namesrv
        return self

    def create_topic(self, name, queues=4, message_type="NORMAL"):
        self.ref.create_topic(name, queues, message_type)

    def create_group(self, name, fifo=False, max_attempts=None):
        self.ref.create_group(name, fifo, max_attempts)

    def queue_ranges(self, topic):
        return self.ref.queue_ranges(topic)

    def stop(self):
        self.ref.stop()


TARGETS = ["ferrocket", "rocketmq"]


@pytest.fixture(scope="session", params=TARGETS)
def target(request):
    """A running target, shared by the session's tests."""
    if request.param == "rocketmq" and os.environ.get("FERROCKET_REFERENCE") == "0":
        pytest.skip("FERROCKET_REFERENCE=0: the Apache RocketMQ reference is skipped")
    tmp = tempfile.TemporaryDirectory(prefix=f"ferrocket-diff-{request.param}-")
    t = (Ferrocket if request.param == "ferrocket" else Reference)(tmp.name).start()
    yield t
    t.stop()
    tmp.cleanup()


@pytest.fixture
def names(request, target):
    """Topic and group names of this test, unique in the session: `names("topic")`."""
    base = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name)[-60:].strip("-")
    return lambda what: f"{base}-{what}"
