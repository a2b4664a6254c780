"""The operator against a real Kubernetes API server (v1.20.2 built from Debian's source, on
Debian's etcd, with kube-controller-manager for garbage collection and the StatefulSet
controller): CRD schemas, server-side apply, status subresources, owner references, finalizers,
Leases and RBAC, all checked by Kubernetes itself rather than by a mock.

The chart is installed with the real helm (v4) with the operator Deployment disabled; the operator
runs as a process here, authenticated as the chart's ServiceAccount, so only the chart's RBAC
lets it act. Its Admin calls reach a real nameserver and two real brokers (groups demo-0 and
demo-1) on 127.0.0.1. There is no kubelet: pods are marked ready by patching their status.

Kubernetes 1.20 has no CEL validation, and its server-side apply refuses the CRDs'
`x-kubernetes-validations` as undeclared fields: the test installs a copy of the chart whose CRDs
have them stripped (everything else as shipped). The CEL rules are checked client-side instead
(operator/tests/crds.rs).
It has no policy/v1 either: the BrokerSet says so in a condition and an Event, and runs without
PodDisruptionBudgets."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e" / "local"))
from conftest import BIN, Broker, free_port, http_get, wait_for  # noqa: E402

OPERATOR = ROOT / "target" / "release" / "ferrocket-operator"
NS = "default"


class ControlPlane:
    def __init__(self):
        out = subprocess.run(["bash", str(ROOT / "e2e" / "apiserver" / "build.sh")], capture_output=True, text=True,
                             timeout=1800)
        assert out.returncode == 0, out.stderr[-4000:]
        self.bin = pathlib.Path(out.stdout.strip().splitlines()[-1])
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="ferrocket-apiserver-"))
        self.proc = subprocess.Popen(["bash", str(ROOT / "e2e" / "apiserver" / "run.sh"), str(self.bin), str(self.dir)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        wait_for(lambda: (self.dir / "ready").exists() or self.proc.poll() is not None, 120, "the API server")
        assert self.proc.poll() is None, self.proc.stdout.read()[-4000:]
        self.admin = str(self.dir / "admin.kubeconfig")

    def kubectl(self, *args, check=True, kubeconfig=None, stdin=None):
        out = subprocess.run([str(self.bin / "kubectl"), "--kubeconfig", kubeconfig or self.admin, *args],
                             capture_output=True, text=True, timeout=120, input=stdin)
        if check:
            assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
        return out

    def get(self, *args):
        """`kubectl get ARGS -o json`, parsed; None if not found."""
        out = self.kubectl("get", *args, "-o", "json", check=False)
        if out.returncode != 0:
            assert "NotFound" in out.stderr, out.stderr
            return None
        return json.loads(out.stdout)

    def helm(self, *args):
        out = subprocess.run([str(self.bin / "helm"), "--kubeconfig", self.admin, *args], capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, f"helm {' '.join(args)}: {out.stdout}{out.stderr}"
        return out.stdout

    def stop(self, keep):
        """Stops the control plane; its directory (etcd data, logs, the operator's log) is kept
        only if `keep` (a failed test) or FERROCKET_KEEP is set."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        if keep or os.environ.get("FERROCKET_KEEP"):
            print(f"control plane logs kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def k8s(request):
    cp = ControlPlane()
    yield cp
    cp.stop(keep=request.session.testsfailed > 0)


@pytest.fixture(scope="module")
def brokers():
    """A nameserver and the masters of broker groups demo-0 and demo-1, as the Admin calls see them."""
    tmp = tempfile.TemporaryDirectory(prefix="ferrocket-apiserver-brokers-")
    root = pathlib.Path(tmp.name)
    namesrv = Broker(root / "ns", mode="namesrv").start()
    groups = [Broker(root / f"demo-{g}", mode="broker", broker_name=f"demo-{g}", namesrv_addrs=[namesrv.endpoint],
                     commitlog_segment_bytes=8 << 20).start() for g in range(2)]
    yield namesrv, groups
    for b in [namesrv, *groups]:
        b.stop()
    tmp.cleanup()


def strip_cel(node):
    """`node` without `x-kubernetes-validations` anywhere (Kubernetes < 1.25 does not know them)."""
    if isinstance(node, dict):
        return {k: strip_cel(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    if isinstance(node, list):
        return [strip_cel(v) for v in node]
    return node


@pytest.fixture(scope="module")
def operator(k8s, brokers):
    """helm install (CRDs, RBAC; no operator Deployment), then the operator as a process under the
    chart's ServiceAccount."""
    chart = k8s.dir / "chart"
    shutil.copytree(ROOT / "charts" / "ferrocket", chart)
    for crd in (chart / "crds").glob("*.yaml"):
        crd.write_text(yaml.safe_dump(strip_cel(yaml.safe_load(crd.read_text()))))
    k8s.helm("install", "ferrocket", str(chart), "--namespace", "ferrocket-system",
             "--create-namespace", "--set", "operator.enabled=false", "--wait", "--timeout", "2m")
    metrics = free_port()
    log = open(k8s.dir / "operator.log", "w")
    env = dict(os.environ, KUBECONFIG=str(k8s.dir / "operator.kubeconfig"), RUST_LOG="info")
    proc = subprocess.Popen([str(OPERATOR), "run", "--lease-namespace", "ferrocket-system", "--identity", "test-0",
                             "--metrics-listen", f"127.0.0.1:{metrics}", "--nameserver-override", brokers[0].endpoint],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    yield proc, metrics
    proc.terminate()
    proc.wait(timeout=30)


def condition(obj, type_):
    return next((c for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"] == type_), {})


def reconciles(metrics, kind):
    text = http_get(metrics, "/metrics")[1]
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.splitlines()
               if l.startswith("ferrocket_operator_reconciles_total{") and f'kind="{kind}"' in l)


def events(k8s, reason):
    out = k8s.get("events.events.k8s.io", "-n", NS)
    return [e for e in out["items"] if e.get("reason") == reason]


def mark_pods_ready(k8s, sts):
    """Stands in for the kubelet: every pod of `sts` Running and Ready."""
    pods = wait_for(lambda: [p for p in k8s.get("pods", "-n", NS)["items"]
                             if p["metadata"]["name"].startswith(sts + "-")] or None, 60, f"pods of {sts}")
    status = {"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}
    for p in pods:
        k8s.kubectl("patch", "pod", p["metadata"]["name"], "-n", NS, "--subresource=status", "--type=merge",
                    "-p", json.dumps(status))


def test_the_operator_runs_a_brokerset_topics_and_groups_on_a_real_api_server(k8s, brokers, operator):
    proc, metrics = operator
    k8s.kubectl("apply", "-f", str(ROOT / "examples" / "kubernetes"))
    bs = wait_for(lambda: k8s.get("brokerset", "demo", "-n", NS), 30, "the BrokerSet")
    uid = bs["metadata"]["uid"]

    # Everything it renders exists, owned by the BrokerSet, applied by the operator's field manager.
    owned = [("statefulset", "demo-0"), ("statefulset", "demo-1"), ("statefulset", "demo-controller"),
             ("deployment", "demo-namesrv"), ("service", "demo-namesrv"), ("service", "demo-0-client"),
             ("configmap", "demo-0-config"), ("configmap", "demo-1-config")]
    for kind, name in owned:
        obj = wait_for(lambda: k8s.get(kind, name, "-n", NS, "--show-managed-fields"), 60, f"{kind}/{name}")
        assert [r["uid"] for r in obj["metadata"]["ownerReferences"]] == [uid], obj["metadata"]
        managers = {(m["manager"], m["operation"]) for m in obj["metadata"]["managedFields"]}
        assert ("ferrocket-operator", "Apply") in managers, managers
    # The cluster's credentials: generated once by the operator (the chart lets it create and get
    # Secrets), owned by the BrokerSet, read by the pods from it.
    secret = wait_for(lambda: k8s.get("secret", "demo-auth", "-n", NS), 60, "the generated credentials")
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [uid]
    assert sorted(secret["data"]) == ["accessKey", "secretKey"]
    lease = wait_for(lambda: k8s.get("lease", "ferrocket-operator", "-n", "ferrocket-system"), 60, "the Lease")
    assert lease["spec"]["holderIdentity"] == "test-0"

    # v1.20 lacks policy/v1: no PodDisruptionBudget, a condition and an Event say so, nothing crashes.
    bs = wait_for(lambda: (b := k8s.get("brokerset", "demo", "-n", NS)) and condition(b, "Degraded").get("reason")
                  == "FeaturesUnavailable" and b, 60, "the FeaturesUnavailable condition")
    assert "policy/v1" in condition(bs, "Degraded")["message"]
    assert wait_for(lambda: events(k8s, "FeaturesUnavailable"), 30, "the FeaturesUnavailable Event")
    assert k8s.get("poddisruptionbudgets.v1beta1.policy", "-n", NS)["items"] == []

    # Pods marked ready (no kubelet): the BrokerSet becomes Ready for its generation.
    for sts in ("demo-0", "demo-1", "demo-controller"):
        mark_pods_ready(k8s, sts)
    bs = wait_for(lambda: (b := k8s.get("brokerset", "demo", "-n", NS)) and condition(b, "Ready").get("status")
                  == "True" and b, 90, "Ready=True")
    assert bs["status"]["observedGeneration"] == bs["metadata"]["generation"]
    assert condition(bs, "Ready")["observedGeneration"] == bs["metadata"]["generation"]

    # The Topic and the ConsumerGroup are applied through the Admin service of both groups.
    for kind, name in (("topic", "orders"), ("consumergroup", "billing")):
        obj = wait_for(lambda: (o := k8s.get(kind, name, "-n", NS)) and condition(o, "Ready").get("status")
                       == "True" and o, 60, f"{kind}/{name} Ready")
        assert "ferrocket.io/cleanup" in obj["metadata"]["finalizers"]
    assert [q["group"] for q in k8s.get("topic", "orders", "-n", NS)["status"]["queues"]] == ["demo-0", "demo-1"]

    # A changed image and config key reach the StatefulSets, and the config hash rolls.
    def template(name):
        return k8s.get("statefulset", name, "-n", NS)["spec"]["template"]
    old_hash = template("demo-0")["metadata"]["annotations"]["ferrocket.io/config-hash"]
    k8s.kubectl("patch", "brokerset", "demo", "-n", NS, "--type=merge", "-p",
                json.dumps({"spec": {"image": "ferrocket:next", "config": {"file_reserved_hours": "24"}}}))
    t = wait_for(lambda: (t := template("demo-0"))["spec"]["containers"][0]["image"] == "ferrocket:next" and t, 60,
                 "the new image")
    assert t["metadata"]["annotations"]["ferrocket.io/config-hash"] != old_hash
    env = {e["name"]: e.get("value") for e in t["spec"]["containers"][0]["env"]}
    assert env["FERROCKET_FILE_RESERVED_HOURS"] == "24"

    # Drift is reverted: a change by another field manager is seen (the operator watches what it
    # owns) and applied back over.
    k8s.kubectl("scale", "statefulset", "demo-1", "-n", NS, "--replicas=5")
    wait_for(lambda: k8s.get("statefulset", "demo-1", "-n", NS)["spec"]["replicas"] == 2, 60, "the drift reverted")

    # A scale-down is refused with a condition and an Event.
    k8s.kubectl("patch", "brokerset", "demo", "-n", NS, "--type=merge", "-p", '{"spec": {"brokerGroups": 1}}')
    bs = wait_for(lambda: (b := k8s.get("brokerset", "demo", "-n", NS)) and condition(b, "Degraded").get("reason")
                  == "ScaleDownRefused" and b, 60, "ScaleDownRefused")
    assert "demo-1" in condition(bs, "Degraded")["message"]
    assert wait_for(lambda: events(k8s, "ScaleDownRefused"), 30, "the ScaleDownRefused Event")
    assert k8s.get("statefulset", "demo-1", "-n", NS) is not None
    k8s.kubectl("patch", "brokerset", "demo", "-n", NS, "--type=merge", "-p", '{"spec": {"brokerGroups": 2}}')

    # Paused: a change is seen (a reconcile runs) but nothing is applied.
    k8s.kubectl("annotate", "brokerset", "demo", "-n", NS, "ferrocket.io/pause-reconciliation=true")
    before = reconciles(metrics, "BrokerSet")
    k8s.kubectl("patch", "brokerset", "demo", "-n", NS, "--type=merge", "-p", '{"spec": {"image": "ferrocket:paused"}}')
    wait_for(lambda: reconciles(metrics, "BrokerSet") > before, 60, "a reconcile of the paused BrokerSet")
    assert template("demo-0")["spec"]["containers"][0]["image"] == "ferrocket:next"
    k8s.kubectl("annotate", "brokerset", "demo", "-n", NS, "ferrocket.io/pause-reconciliation-")

    # A Topic with deletionPolicy Delete: its finalizer deletes it on the brokers first.
    topic = {"apiVersion": "ferrocket.io/v1alpha1", "kind": "Topic", "metadata": {"name": "scratch", "namespace": NS},
             "spec": {"brokerSet": "demo", "queues": 2, "deletionPolicy": "Delete"}}
    k8s.kubectl("apply", "-f", "-", stdin=json.dumps(topic))
    wait_for(lambda: condition(k8s.get("topic", "scratch", "-n", NS), "Ready").get("status") == "True", 60,
             "topic scratch Ready")
    _, groups = brokers

    def on_brokers(name):
        out = [subprocess.run([str(BIN), "topic", "describe", name, "--server", b.endpoint], capture_output=True,
                              timeout=30) for b in groups]
        return [o.returncode == 0 for o in out]
    assert on_brokers("scratch") == [True, True]
    k8s.kubectl("delete", "topic", "scratch", "-n", NS, "--timeout=60s")
    assert on_brokers("scratch") == [False, False]
    assert on_brokers("orders") == [True, True]

    # The example User: its Secret generated (owned by it), the user and its rules on every group;
    # deleting it removes them from the brokers before its finalizer goes.
    user = wait_for(lambda: (u := k8s.get("user.ferrocket.io", "orders-app", "-n", NS))
                    and condition(u, "Ready").get("status") == "True" and u, 60, "user orders-app Ready")
    assert user["status"]["groups"] == ["demo-0", "demo-1"]
    secret = k8s.get("secret", "orders-app-credentials", "-n", NS)
    assert [r["uid"] for r in secret["metadata"]["ownerReferences"]] == [user["metadata"]["uid"]]

    def users_on_brokers():
        return [[line.split()[0] for line in subprocess.run(
            [str(BIN), "user", "list", "--server", b.endpoint], capture_output=True, text=True, timeout=30,
            check=True).stdout.splitlines()] for b in groups]
    assert users_on_brokers() == [["orders-app"], ["orders-app"]]
    k8s.kubectl("delete", "user.ferrocket.io", "orders-app", "-n", NS, "--timeout=60s")
    assert users_on_brokers() == [[], []]

    # Invalid resources are refused by the CRD schema, with a message naming the field.
    bad = {"apiVersion": "ferrocket.io/v1alpha1", "kind": "BrokerSet", "metadata": {"name": "bad", "namespace": NS},
           "spec": {"brokerGroups": 0, "image": "x", "storage": {"size": "1Gi"}}}
    out = k8s.kubectl("apply", "-f", "-", stdin=json.dumps(bad), check=False)
    assert out.returncode != 0 and "brokerGroups" in out.stderr, out.stderr

    # Deleting the BrokerSet: the garbage collector removes what it owned.
    assert proc.poll() is None, "the operator is still running"
    k8s.kubectl("delete", "brokerset", "demo", "-n", NS, "--wait=false")
    for kind, name in owned:
        wait_for(lambda: k8s.get(kind, name, "-n", NS) is None, 90, f"{kind}/{name} garbage-collected")
