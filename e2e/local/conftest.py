"""Process-level e2e fixtures: real `ferrocket` processes on 127.0.0.1 and the official clients.

Every wait is bounded and waits for a condition (the `ready` line, a process exit), never a sleep.
"""
import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLIENTS = ROOT / "e2e" / "clients"
BIN = pathlib.Path(os.environ.get("FERROCKET_BIN", ROOT / "target" / "release" / "ferrocket"))
PYTHON = os.environ.get("FERROCKET_E2E_PYTHON", str(CLIENTS / "python" / ".venv" / "bin" / "python"))


def jvm(project, build):
    """`java` with the class path of one build of `project` (by e2e/clients/java/build.sh) in an
    @argfile (it is long)."""
    target = CLIENTS / project / "target"
    cp_file = target / f"cp-{build}.txt"
    assert cp_file.exists(), f"{project} is not built: run e2e/clients/java/build.sh"
    argfile = target / f"java-{build}.args"
    text = f"-cp {target / f'classes-{build}'}:{cp_file.read_text().strip()}\n"
    # A JVM started a moment ago may still be reading the file: never truncate it in place.
    if not argfile.exists() or argfile.read_text() != text:
        tmp = argfile.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(argfile)
    return ["java", "-Xmx256m", f"@{argfile}"]


def java_cmd(cls, version="5", props=(), **opts):
    """The command line of a Java driver built against client `version` (5 or 4), with JVM system
    properties `props` (`-Dk=v` strings)."""
    java, *rest = jvm("java", version)
    args = [java, *props, *rest, f"io.ferrocket.e2e.{cls}"]
    for k, v in opts.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def lines(out):
    """A driver's JSON output lines, as dicts."""
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def java(cls, version="5", **opts):
    """Runs one Java driver to its end (its own --timeout or --hold plus two minutes at most);
    returns its JSON lines."""
    limit = int(opts.get("timeout", opts.get("hold", 60))) + 120
    p = subprocess.run(java_cmd(cls, version, **opts), capture_output=True, text=True, timeout=limit)
    assert p.returncode == 0, f"{cls} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}"
    return lines(p.stdout)


def java_run(cls, version="5", props=(), **opts):
    """Runs one Java driver (3 minutes at most) whatever its exit: (exit code, JSON lines, stdout
    and stderr)."""
    p = subprocess.run(java_cmd(cls, version, props, **opts), capture_output=True, text=True, timeout=180)
    return p.returncode, lines(p.stdout), p.stdout + p.stderr


class Background:
    """A driver running beside the test; its JSON lines are collected as they come."""

    def __init__(self, args):
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.rows = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.rows.append(json.loads(line))

    def wait(self, timeout):
        self.proc.wait(timeout=timeout)
        self.reader.join(10)
        assert self.proc.returncode == 0, f"driver failed ({self.proc.returncode}): {self.proc.stderr.read()[-4000:]}"
        return self.rows


CLIENT_CMDS = {
    "python": lambda: [PYTHON, str(CLIENTS / "python" / "client.py")],
    "node": lambda: ["node", str(CLIENTS / "node" / "client.js")],
    "rust": lambda: [str(CLIENTS / "rust-v5" / "target" / "release" / "ferrocket-e2e-rust-v5")],
    # rocketmq-client-java 5.0.8 with its defaults: TLS to the broker's gRPC port.
    "java": lambda: [*jvm("java-grpc", "grpc"), "io.ferrocket.e2e.grpc.Client"],
    # github.com/apache/rocketmq-clients/golang/v5 v5.1.4 with its defaults: TLS as well.
    "go": lambda: [str(CLIENTS / "go-grpc" / "ferrocket-e2e-go-grpc")],
}
ALL_CLIENTS = list(CLIENT_CMDS)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A `ferrocket` process with its own data dir; restartable on the same port and data."""

    def __init__(self, data_dir, mode="standalone", host=None, **config):
        """`host`: (network namespace, address) to run in (netns.py), instead of 127.0.0.1."""
        self.data_dir = pathlib.Path(data_dir)
        self.mode = mode
        self.netns, addr = host or (None, "127.0.0.1")
        self.port = free_port()
        self.endpoint = f"{addr}:{self.port}"
        # Remoting: the broker's port, and the standalone nameserver's (a namesrv serves
        # Remoting on its gRPC port).
        self.remoting = f"{addr}:{free_port()}"
        self.namesrv = self.endpoint if mode == "namesrv" else f"{addr}:{free_port()}"
        self.config = {"min_invisible_ms": 1000, "consumer_snapshot_interval_ms": 1000,
                       "remoting_listen": self.remoting, "remoting_namesrv_listen": self.namesrv, **config}
        self.proc = None
        self.log = self.data_dir.parent / f"broker-{self.port}.log"

    def start(self, timeout=30):
        cfg = self.data_dir.parent / f"broker-{self.port}.toml"
        cfg.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in self.config.items()))
        inside = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen(
            [*inside, str(BIN), self.mode, "--config", str(cfg), "--listen", self.endpoint, "--data-dir",
             str(self.data_dir)],
            stdout=subprocess.PIPE, stderr=open(self.log, "ab"), text=True,
        )
        ready = threading.Event()
        line = []

        def read():
            line.append(self.proc.stdout.readline())
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(timeout), f"broker not ready within {timeout}s; log: {self.log}"
        assert line[0].startswith("ready "), f"unexpected first line {line[0]!r}; log: {self.log.read_text()[-3000:]}"
        return self

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self, timeout=20):
        """SIGTERM; returns the exit code."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout=timeout)
        return self.proc.returncode if self.proc else None


@contextlib.contextmanager
def broker_processes():
    """Yields `make(mode="standalone", start=True, **config)`, which makes a process of `mode`
    with `config` in a temporary directory, started unless `start` is False (its port and data
    dir are chosen either way, so peers can name it first). On exit every process still running
    is killed and the directory removed."""
    brokers = []
    tmp = tempfile.TemporaryDirectory(prefix="ferrocket-e2e-")

    def make(mode="standalone", start=True, **config):
        b = Broker(pathlib.Path(tmp.name) / f"data-{len(brokers)}", mode, **config)
        brokers.append(b)
        return b.start() if start else b

    try:
        yield make
    finally:
        for b in brokers:
            if b.proc and b.proc.poll() is None:
                b.kill9()
        tmp.cleanup()


@pytest.fixture
def broker_factory():
    with broker_processes() as make:
        yield make


@pytest.fixture
def net():
    """Hosts for partition tests (netns.Net): the failover cluster's HOSTS. Requested before
    `broker_factory`, so its processes are killed before the namespaces go."""
    from netns import Net
    from test_failover import HOSTS
    n = Net(HOSTS)
    yield n
    n.close()


@pytest.fixture
def broker(broker_factory):
    return broker_factory()


def client_args(kind, cmd, broker, **opts):
    """The command line of one client driver command: `k=v` becomes `--k v`, `True` a bare flag,
    `False` a `--no-k` flag."""
    args = [*CLIENT_CMDS[kind](), cmd, "--endpoint", broker.endpoint]
    for k, v in opts.items():
        flag = k.replace("_", "-")
        if v is False:
            args.append(f"--no-{flag}")
        elif v is True:
            args.append(f"--{flag}")
        else:
            args += [f"--{flag}", str(v)]
    return args


def run_client(kind, cmd, broker, check=True, proc_timeout=None, **opts):
    """Runs one client driver command; returns its JSON output lines as dicts. The process gets
    `proc_timeout` seconds, by default the client's own --timeout or --hold plus a minute."""
    limit = proc_timeout or float(opts.get("timeout", opts.get("hold", 30))) + 60
    p = subprocess.run(client_args(kind, cmd, broker, **opts), capture_output=True, text=True, timeout=limit)
    if check:
        assert p.returncode == 0, f"{kind} {cmd} failed ({p.returncode}):\n{p.stderr[-4000:]}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def admin(broker, *args):
    """Runs `ferrocket <args> --server <broker> --json` and returns the parsed JSON."""
    out = subprocess.run([str(BIN), *args, "--server", broker.endpoint, "--json"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return json.loads(out)


def cli(broker, *args):
    """Runs `ferrocket <args> --server <broker>`; returns stdout."""
    return subprocess.run([str(BIN), *args, "--server", broker.endpoint], capture_output=True, text=True,
                          timeout=30, check=True).stdout


def issue_certificate(directory, sans):
    """A CA and a server certificate it issued for `sans` (`DNS:name`, `IP:address`), made by
    openssl (ECDSA P-256, 2 days), in cert-manager's file names: (ca.crt, tls.crt, tls.key)."""
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, csr, ext = directory / "tls.crt", directory / "tls.key", directory / "tls.csr", directory / "ext.cnf"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)  # noqa: E731
    run("req", "-x509", *ec, "-subj", "/CN=ferrocket-test-ca", "-days", "2", "-keyout", str(ca_key), "-out", str(ca),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-subj", "/CN=ferrocket-test-server", "-keyout", str(key), "-out", str(csr))
    ext.write_text(f"subjectAltName={','.join(sans)}\nbasicConstraints=CA:FALSE\n"
                   "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-days", "2",
        "-extfile", str(ext), "-out", str(cert))
    return ca, cert, key


def wait_for(condition, timeout, what):
    """Polls `condition` (bounded by `timeout` seconds) until it returns a truthy value, which it returns."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.2)


def start_client(kind, cmd, broker, **opts):
    """Starts a client driver in the background (stdout piped)."""
    return subprocess.Popen(client_args(kind, cmd, broker, **opts), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def queue_ranges(broker, topic):
    """(min offset, max offset) of each queue of `topic` on `broker` (`ferrocket topic describe`);
    None if the broker does not have the topic."""
    out = subprocess.run([str(BIN), "topic", "describe", topic, "--server", broker.endpoint], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        return None
    rows = [line.split() for line in out.stdout.splitlines()]
    return [(int(r[1]), int(r[2])) for r in rows if len(r) == 3 and r[0].isdigit()]


def queue_offsets(broker, topic):
    """Max offset of each queue of `topic` on `broker`; None if the broker does not have it."""
    ranges = queue_ranges(broker, topic)
    return None if ranges is None else [high for _, high in ranges]


def cluster_status(*nameservers):
    """`ferrocket cluster status --json` through `nameservers` (processes or `host:port` strings):
    {"brokers": [...], "controller": [...]}, both empty while no nameserver answers."""
    addrs = ",".join(n if isinstance(n, str) else n.endpoint for n in nameservers)
    out = subprocess.run([str(BIN), "cluster", "status", "--json", "--namesrv", addrs], capture_output=True, text=True,
                         timeout=30)
    return json.loads(out.stdout) if out.returncode == 0 else {"brokers": [], "controller": []}


def http_get(port, path):
    """(status, body) of GET http://127.0.0.1:<port><path>, error statuses included."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
