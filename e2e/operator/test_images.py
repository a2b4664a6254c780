"""The broker and operator images, built with podman from the Dockerfiles users build
(e2e/images/build.sh: a local Debian base stands in for distroless, the binaries come prebuilt),
started for real: the broker image serves the official Python client and its probes as uid
65532; the operator image renders a BrokerSet. Skipped, saying why, where podman is missing."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "e2e" / "local"))
from conftest import free_port, http_get, run_client, wait_for  # noqa: E402

CONF = str(ROOT / "e2e" / "images" / "containers.conf")
PODMAN = ["podman", "--runtime", "/usr/sbin/runc", "--cgroup-manager", "cgroupfs"]


def podman(*args, **kw):
    env = dict(os.environ, CONTAINERS_CONF=CONF)
    return subprocess.run(PODMAN + list(args), capture_output=True, text=True, env=env, timeout=300, **kw)


@pytest.fixture(scope="module")
def images():
    missing = [t for t in ("podman", "debootstrap") if shutil.which(t) is None]
    if missing or not os.path.exists("/usr/sbin/runc"):
        pytest.skip(f"podman images not buildable here: {missing or ['runc']} missing")
    out = subprocess.run(["bash", str(ROOT / "e2e" / "images" / "build.sh")], capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_images_run_as_non_root_with_only_the_binary_added(images):
    for image, binary in (("localhost/ferrocket:test", "ferrocket"), ("localhost/ferrocket-operator:test", "ferrocket-operator")):
        config = json.loads(podman("image", "inspect", image).stdout)[0]["Config"]
        assert config["User"] == "65532:65532", config
        assert config["Entrypoint"] == [f"/usr/local/bin/{binary}"]
        # Over the base: one layer, the stripped binary (distroless adds ~20 MB of glibc).
        base = json.loads(podman("image", "inspect", "localhost/ferrocket-base:bookworm").stdout)[0]
        added = json.loads(podman("image", "inspect", image).stdout)[0]["Size"] - base["Size"]
        assert added < 40 << 20, f"{image} adds {added} bytes"


def test_the_broker_image_serves_clients_and_probes_as_uid_65532(images):
    port, metrics = free_port(), free_port()
    run = podman("run", "-d", "--network", "host", "-e", f"FERROCKET_METRICS_LISTEN=127.0.0.1:{metrics}",
                 "localhost/ferrocket:test", "standalone", "--listen", f"127.0.0.1:{port}",
                 "--data-dir", "/home/nonroot/data")
    assert run.returncode == 0, run.stderr
    cid = run.stdout.strip()
    try:
        def ready():
            try:
                return http_get(metrics, "/readyz")[0] == 200
            except OSError:  # not listening yet
                return False
        wait_for(ready, 30, "the broker container's /readyz")
        pid = podman("inspect", "-f", "{{.State.Pid}}", cid).stdout.strip()
        uid = next(l for l in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("Uid:"))
        assert uid.split()[1:] == ["65532"] * 4, uid
        broker = types.SimpleNamespace(endpoint=f"127.0.0.1:{port}")
        sent = sorted(m["id"] for m in run_client("python", "send", broker, topic="img", count=5))
        got = sorted(m["id"] for m in run_client("python", "receive", broker, topic="img", group="g", count=5,
                                                 timeout=60))
        assert got == sent and len(sent) == 5
    finally:
        podman("rm", "-f", cid)


def test_the_operator_image_starts_and_renders(images):
    manifest = (ROOT / "examples" / "kubernetes" / "brokerset.yaml").read_text()
    out = podman("run", "--rm", "-i", "--network", "none", "localhost/ferrocket-operator:test",
                 "render", "--file", "/dev/stdin", input=manifest)
    assert out.returncode == 0, out.stderr
    assert "kind: StatefulSet" in out.stdout and "name: demo-0" in out.stdout
