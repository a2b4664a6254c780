"""The wiring the operator renders forms a working cluster: every pod of the example BrokerSet
(nameserver Deployment, controller StatefulSet, broker StatefulSets) becomes a real `ferrocket`
process with the pod's own args, env and ConfigMap file, and the official Python client sends
and receives through them.

A pod is stood in for by a loopback address of its own (127.<n>.<m>.<k>), so the rendered ports
stay as they are. Only what Kubernetes itself would provide is substituted: the pod's address for
`0.0.0.0`, Service and pod DNS names by the addresses behind them (a headless Service by all of
them, as its A records), `fieldRef` env by the pod's name, namespace and ordinal, `$(VAR)`
references, `secretKeyRef` env and Secret volumes by the Secrets a cluster would hold (the
cluster's credentials, generated as the operator does, and for the TLS variant a CA's certificate
for the pods' addresses), and volume mount paths by directories.

The example BrokerSet runs with authentication on (the default): the processes sign their calls
to each other, and the CLI and the client sign as the cluster's super user. Its TLS variant
(`spec.tls` naming a cert-manager-style Secret, mode Enforcing) refuses plaintext everywhere: the
processes register, elect and replicate over TLS, and the Python client connects trusting the
CA."""
import json
import os
import pathlib
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e" / "local"))
from conftest import BIN, cluster_status, issue_certificate, run_client, wait_for  # noqa: E402

OPERATOR = ROOT / "target" / "release" / "ferrocket-operator"
NAMESPACE = "default"


class Pod:
    """One pod of a rendered workload, run as a process."""

    def __init__(self, workload, ordinal, ip, root):
        self.workload, self.ordinal, self.ip = workload, ordinal, ip
        self.name = f"{workload['metadata']['name']}-{ordinal}"
        self.spec = workload["spec"]["template"]["spec"]
        self.container = self.spec["containers"][0]
        self.dir = root / self.name
        self.dir.mkdir(parents=True)
        self.proc = None



TLS = {"secretName": "demo-tls", "serverName": "ferrocket.demo"}


def render(root, tls):
    bs = yaml.safe_load((ROOT / "examples" / "kubernetes" / "brokerset.yaml").read_text())
    if tls:
        bs["spec"]["tls"] = TLS
    path = root / "brokerset.yaml"
    path.write_text(yaml.safe_dump(bs))
    out = subprocess.run([str(OPERATOR), "render", "--file", str(path)], capture_output=True, text=True, timeout=60,
                         check=True)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(params=["auth", "auth+tls"])
def cluster(request, monkeypatch):
    tls = request.param == "auth+tls"
    root = pathlib.Path(tempfile.mkdtemp(prefix="ferrocket-pods-"))
    objects = render(root, tls)
    by_kind = lambda kind: [o for o in objects if o["kind"] == kind]  # noqa: E731
    config_maps = {o["metadata"]["name"]: o["data"] for o in by_kind("ConfigMap")}
    subnet = random.randint(20, 250)
    pods = []
    for n, w in enumerate(by_kind("Deployment") + by_kind("StatefulSet")):
        for ordinal in range(w["spec"]["replicas"]):
            pods.append(Pod(w, ordinal, f"127.{subnet}.{n + 1}.{ordinal + 1}", root))

    # What cluster DNS would answer for each Service, and for each StatefulSet pod's own name.
    dns = {}
    for svc in by_kind("Service"):
        sel = svc["spec"]["selector"]
        backends = [p for p in pods
                    if all(p.workload["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        dns[f"{svc['metadata']['name']}.{NAMESPACE}.svc"] = [p.ip for p in backends]
        for p in backends:
            if p.workload["kind"] == "StatefulSet":
                dns[f"{p.name}.{svc['metadata']['name']}.{NAMESPACE}.svc"] = [p.ip]

    # The Secrets: the credentials as the operator generates them, and the TLS Secret.
    secrets = {"demo-auth": {"accessKey": "ferrocket-cluster", "secretKey": os.urandom(32).hex()}}
    if tls:
        (root / "pki").mkdir()
        files = issue_certificate(root / "pki", [f"DNS:{TLS['serverName']}", *(f"IP:{p.ip}" for p in pods)])
        secrets["demo-tls"] = {f.name: f.read_text() for f in files}
    # The CLI (`cluster_status`, `topic create`) signs and trusts as the cluster's processes do.
    monkeypatch.setenv("FERROCKET_AUTH_ACCESS_KEY", secrets["demo-auth"]["accessKey"])
    monkeypatch.setenv("FERROCKET_AUTH_SECRET_KEY", secrets["demo-auth"]["secretKey"])
    if tls:
        monkeypatch.setenv("FERROCKET_TLS_CA_FILE", str(root / "pki" / "ca.crt"))
        monkeypatch.setenv("FERROCKET_TLS_SERVER_NAME", TLS["serverName"])
        monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", str(root / "pki" / "ca.crt"))

    def resolve(text, pod):
        text = text.replace("0.0.0.0", pod.ip)
        # `["name:port"]` lists: one entry per address behind the name.
        def expand_list(m):
            host, port = m.group(1).rsplit(":", 1)
            return json.dumps([f"{ip}:{port}" for ip in dns[host]]) if host in dns else m.group(0)
        text = re.sub(r'\["([^"\]]+)"\]', expand_list, text)
        for host in sorted(dns, key=len, reverse=True):
            text = text.replace(host, dns[host][0])
        return text

    def mounted(text, paths):
        for mount_path, target in paths.items():
            text = re.sub(re.escape(mount_path) + r'(?=["/]|$)', target, text)
        return text

    for p in pods:
        mounts = {m["mountPath"]: m["name"] for m in p.container.get("volumeMounts", [])}
        paths = {mount_path: str(p.dir / volume) for mount_path, volume in mounts.items()}
        for mount_path, volume in mounts.items():
            target = p.dir / volume
            target.mkdir()
            source = next((v for v in p.spec.get("volumes", []) if v["name"] == volume), None)
            if source and "configMap" in source:
                for key, value in config_maps[source["configMap"]["name"]].items():
                    (target / key).write_text(mounted(resolve(value, p), paths))
            if source and "secret" in source:
                for key, value in secrets[source["secret"]["secretName"]].items():
                    (target / key).write_text(value)
                    (target / key).chmod(source["secret"].get("defaultMode", 0o644))
        env = {"PATH": "/usr/bin:/bin", "RUST_LOG": "info"}
        for e in p.container.get("env", []):
            if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = secrets[ref["name"]][ref["key"]]
            elif "valueFrom" in e:
                field = e["valueFrom"]["fieldRef"]["fieldPath"]
                env[e["name"]] = {"metadata.name": p.name, "metadata.namespace": NAMESPACE,
                                  "metadata.labels['apps.kubernetes.io/pod-index']": str(p.ordinal)}[field]
            else:
                value = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], e["value"])
                env[e["name"]] = mounted(resolve(value, p), paths)
        args = [mounted(resolve(a, p), paths) for a in p.container["args"]]
        p.cmd, p.env = [str(BIN), *args], env

    def start(p):
        log = open(p.dir / "log", "ab")
        p.proc = subprocess.Popen(p.cmd, env=p.env, stdout=subprocess.PIPE, stderr=log, text=True)
        line = []
        reader = threading.Thread(target=lambda: line.append(p.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(30)
        assert line and line[0].startswith("ready "), f"{p.name} did not start: {(p.dir / 'log').read_text()[-3000:]}"

    try:
        for p in pods:
            start(p)
        yield pods, dns, secrets["demo-auth"], tls
    finally:
        for p in pods:
            if p.proc and p.proc.poll() is None:
                p.proc.kill()
                p.proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)  # 1 GiB of preallocated CommitLog per broker


def test_the_rendered_pods_form_a_cluster_the_python_client_uses(cluster):
    pods, dns, credentials, tls = cluster
    # The nameserver Service's addresses, as its DNS name would give them (the controller's too).
    namesrv = ",".join(f"{ip}:9876" for ip in dns[f"demo-namesrv.{NAMESPACE}.svc"])
    brokers = [p for p in pods if p.workload["metadata"]["name"] in ("demo-0", "demo-1")]
    assert len(brokers) == 4

    def formed():
        st = cluster_status(namesrv)
        groups = {g["broker_name"]: g for g in st["controller"]}
        routed_masters = sum(b["registered_role"] == "master" for b in st["brokers"])
        return (len(st["brokers"]) == 4 and routed_masters == 2 and set(groups) == {"demo-0", "demo-1"}
                and all(len(g["sync_state_set"]) == 2 for g in groups.values()))
    wait_for(formed, 60, "both broker groups to elect a master (pod 0) and get their slave in sync")
    st = cluster_status(namesrv)
    masters = {g["broker_name"]: g["master"] for g in st["controller"]}
    assert masters == {"demo-0": f"{brokers[0].ip}:8081", "demo-1": f"{brokers[2].ip}:8081"}, masters
    roles = {b["endpoint"]: (b["role"], b["epoch"]) for b in st["brokers"]}
    assert roles == {f"{b.ip}:8081": ("master" if b.ordinal == 0 else "slave", 1) for b in brokers}, roles

    subprocess.run([str(BIN), "topic", "create", "orders", "--queues", "4", "--namesrv", namesrv], check=True,
                   capture_output=True, timeout=30)

    wait_for(lambda: sum(any(t["name"] == "orders" for t in b["topics"]) and b["registered_role"] == "master"
                         for b in cluster_status(namesrv)["brokers"]) == 2, 30, "both groups' masters to route the topic")

    class Endpoint:
        endpoint = f"{brokers[0].ip}:8081"

    sign = {"access_key": credentials["accessKey"], "secret_key": credentials["secretKey"]}
    if tls:
        sign["tls"] = True
    sent = run_client("python", "send", Endpoint, topic="orders", count=60, **sign)
    got = run_client("python", "receive", Endpoint, topic="orders", group="billing", count=60, timeout=60, poll=1,
                     **sign)
    assert sorted(m["id"] for m in got) == sorted(m["id"] for m in sent)
    assert {m["queue"].split(".")[0] for m in sent} == {"demo-0", "demo-1"}, "sends spread over both groups"

    # Nothing gets in unsigned, and under TLS nothing in plaintext.
    rows = run_client("python", "send", Endpoint, check=False, topic="orders", count=1, keep_going=True,
                      **({"tls": True} if tls else {}))
    assert not [r for r in rows if "id" in r], rows
    if tls:
        rows = run_client("python", "send", Endpoint, check=False, topic="orders", count=1, keep_going=True,
                          access_key=credentials["accessKey"], secret_key=credentials["secretKey"])
        assert not [r for r in rows if "id" in r], rows
