"""Apache RocketMQ 5.x from its Maven Central jars, as the reference Ferrocket is measured and
compared against (DESIGN.md §9): a NamesrvStartup JVM and a ProxyStartup JVM in local mode (the
proxy embeds the broker), on free loopback ports, with a temporary store.

    with RocketMQ(workdir, flush="ASYNC_FLUSH") as ref:
        ref.namesrv, ref.grpc, ref.remoting   # host:port
        ref.create_topic("bench", queues=8)

`install()` copies the jars into ~/.cache/ferrocket/rocketmq-<version>/lib once (Maven, from
e2e/reference/pom.xml).
"""
import json
import os
import pathlib
import signal
import socket
import subprocess
import time

HERE = pathlib.Path(__file__).resolve().parent
VERSION = "5.3.3"
LIB = pathlib.Path.home() / ".cache" / "ferrocket" / f"rocketmq-{VERSION}" / "lib"
CLUSTER = "RefCluster"
JVM_OPENS = ["--add-opens", "java.base/java.nio=ALL-UNNAMED", "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
             "--add-opens", "java.base/java.lang=ALL-UNNAMED"]


def install():
    """The jars, fetched by Maven on first use. Returns the lib directory."""
    if not (LIB / ".complete").exists():
        subprocess.run(["mvn", "-q", "-B", "-f", str(HERE / "pom.xml"), f"-Drocketmq.version={VERSION}",
                        "dependency:copy-dependencies", f"-DoutputDirectory={LIB}"], check=True, timeout=1800)
        (LIB / ".complete").write_text(VERSION)
    return LIB


def mqadmin(namesrv, *args, home=None, check=True):
    """Runs RocketMQ's `mqadmin <args> -n <namesrv>` (MQAdminStartup) against any nameserver,
    Ferrocket's too; returns its stdout. With `check`, a non-zero exit fails."""
    home = home or install().parent
    cmd = ["java", "-Xmx256m", *JVM_OPENS, f"-Duser.home={home}", "-cp", f"{LIB}/*",
           "org.apache.rocketmq.tools.command.MQAdminStartup", *args, "-n", namesrv]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "ROCKETMQ_HOME": str(home)})
    assert not check or p.returncode == 0, f"mqadmin {args} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}"
    return p.stdout


def route_code(namesrv, topic):
    """The response code of a Remoting GET_ROUTEINFO_BY_TOPIC (105) for `topic` to `namesrv`:
    0 once the nameserver has a route, 17 (TOPIC_NOT_EXIST) before. JSON-serialised header, as
    RocketMQ's clients send it (REMOTING.md)."""
    host, port = namesrv.rsplit(":", 1)
    header = json.dumps({"code": 105, "flag": 0, "language": "JAVA", "opaque": 1, "version": 0,
                         "serializeTypeCurrentRPC": "JSON", "extFields": {"topic": topic}}).encode()
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((4 + len(header)).to_bytes(4, "big") + len(header).to_bytes(4, "big") + header)
        frame = b""
        while len(frame) < 8:
            chunk = s.recv(65536)
            assert chunk, "the nameserver closed the connection"
            frame += chunk
        length, header_len = int.from_bytes(frame[:4], "big"), int.from_bytes(frame[4:8], "big") & 0xFFFFFF
        while len(frame) < 8 + header_len:
            chunk = s.recv(65536)
            assert chunk, "the nameserver closed the connection"
            frame += chunk
        assert header_len <= length
        return json.loads(frame[8:8 + header_len])["code"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, log, timeout):
    """Waits (at most `timeout` s) until `port` accepts connections; fails if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"port {port} not open after {timeout}s:\n{log.read_text()[-3000:]}")


class RocketMQ:
    """A running reference: nameserver and proxy with its embedded broker."""

    def __init__(self, workdir, flush="ASYNC_FLUSH", heap_mb=2048, proxy_conf=None, **broker_conf):
        """`broker_conf`: more broker.conf settings (RocketMQ `BrokerConfig` / `MessageStoreConfig`
        names), e.g. `transactionCheckInterval=5000`; `proxy_conf`: more rmq-proxy.json settings
        (`ProxyConfig` names, numbers)."""
        self.dir = pathlib.Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.flush, self.heap_mb, self.broker_conf, self.proxy_conf = flush, heap_mb, broker_conf, proxy_conf or {}
        self.procs = []

    def _java(self, name, main, args, heap_mb, logback):
        log = self.dir / f"{name}.out"
        cmd = ["java", f"-Xms{heap_mb}m", f"-Xmx{heap_mb}m", *JVM_OPENS, f"-Duser.home={self.dir}",
               f"-Drmq.logback.configurationFile={logback}", "-cp", f"{LIB}/*", main, *args]
        env = {**os.environ, "ROCKETMQ_HOME": str(self.dir)}
        proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, cwd=self.dir, env=env,
                                start_new_session=True)
        self.procs.append(proc)
        return proc, log

    def start(self):
        install()
        ns_port, broker_port, grpc_port, remoting_port = (free_port() for _ in range(4))
        self.namesrv = f"127.0.0.1:{ns_port}"
        (self.dir / "namesrv.conf").write_text(f"listenPort={ns_port}\n")
        ns, log = self._java("namesrv", "org.apache.rocketmq.namesrv.NamesrvStartup",
                             ["-c", str(self.dir / "namesrv.conf")], 512, "rmq.namesrv.logback.xml")
        wait_port(ns_port, ns, log, 60)
        store = self.dir / "store"
        (self.dir / "broker.conf").write_text("\n".join([
            f"brokerClusterName={CLUSTER}", "brokerName=ref-a", "brokerId=0", f"listenPort={broker_port}",
            f"namesrvAddr={self.namesrv}", f"storePathRootDir={store}", f"storePathCommitLog={store}/commitlog",
            f"flushDiskType={self.flush}", "brokerRole=ASYNC_MASTER", "autoCreateTopicEnable=true",
            "diskMaxUsedSpaceRatio=95", *(f"{k}={v}" for k, v in self.broker_conf.items()), ""]))
        (self.dir / "rmq-proxy.json").write_text(
            f'{{"rocketMQClusterName": "{CLUSTER}", "grpcServerPort": {grpc_port}, '
            f'"remotingListenPort": {remoting_port}, "namesrvAddr": "{self.namesrv}"'
            + "".join(f', "{k}": {v}' for k, v in self.proxy_conf.items()) + "}")
        self.proxy, log = self._java("proxy", "org.apache.rocketmq.proxy.ProxyStartup",
                                     ["-pm", "local", "-bc", str(self.dir / "broker.conf"),
                                      "-pc", str(self.dir / "rmq-proxy.json"), "-n", self.namesrv],
                                     self.heap_mb, "rmq.proxy.logback.xml")
        self.grpc, self.remoting = f"127.0.0.1:{grpc_port}", f"127.0.0.1:{remoting_port}"
        wait_port(grpc_port, self.proxy, log, 120)
        wait_port(broker_port, self.proxy, log, 60)
        # Registered: the nameserver routes the cluster's own topic (`clusterTopicEnable`), so an
        # `mqadmin updateTopic -c` right after the start finds the broker.
        deadline = time.monotonic() + 60
        while route_code(self.namesrv, CLUSTER) != 0:
            assert time.monotonic() < deadline, f"the broker did not register within 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        return self

    def admin(self, *args):
        """Runs `mqadmin <args> -n <namesrv>` (MQAdminStartup); returns its output."""
        return mqadmin(self.namesrv, *args, home=self.dir)

    def create_topic(self, name, queues=8, message_type="NORMAL"):
        """Creates the topic and waits (at most 30 s) until the nameserver routes it: the broker
        registers the change on its own thread, and a client that asks first gets 'No topic route
        info in name server'."""
        self.admin("updateTopic", "-c", CLUSTER, "-t", name, "-r", str(queues), "-w", str(queues),
                   "-a", f"+message.type={message_type}")
        deadline = time.monotonic() + 30
        while route_code(self.namesrv, name) != 0:
            assert time.monotonic() < deadline, f"topic {name} not routed 30 s after updateTopic"
            time.sleep(0.2)

    def create_group(self, name, fifo=False, max_attempts=None):
        """A subscription group; `fifo` is consumeMessageOrderly, `max_attempts` the deliveries
        before the DLQ (RocketMQ's retryMaxTimes is the redeliveries: one less)."""
        args = ["updateSubGroup", "-c", CLUSTER, "-g", name]
        if fifo:
            args += ["-o", "true"]
        if max_attempts:
            args += ["-r", str(max_attempts - 1)]
        self.admin(*args)

    def queue_ranges(self, topic):
        """(min offset, max offset) of each queue of `topic` (`mqadmin topicStatus`), by queue id;
        None if the topic has no route."""
        out = mqadmin(self.namesrv, "topicStatus", "-t", topic, home=self.dir, check=False)
        rows = [line.split() for line in out.splitlines()]
        ranges = sorted((int(r[1]), int(r[2]), int(r[3])) for r in rows if len(r) >= 4 and r[1].isdigit())
        return [(low, high) for _, low, high in ranges] or None

    def pids(self):
        """The process ids whose CPU time is the broker's: the proxy JVM (it embeds the broker)."""
        return [self.proxy.pid]

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
