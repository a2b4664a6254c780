"""TLS as RocketMQ serves it: TLS and plaintext on one port (`permissive`, the default), a
self-signed certificate when none is configured, a configured one reloaded when its files change.
The Java gRPC client (rocketmq-client-java 5.0.8) runs with its defaults, TLS on; the Python,
Node and Rust clients keep speaking plaintext to the same port (test_clients.py runs all four).
With `tls_mode = "enforcing"` and a CA's certificate, plaintext is refused on every port, and the
Python gRPC client and the Java Remoting client (5.x and 4.x, RocketMQ's `tls.*` properties)
connect trusting the CA."""
import json
import socket
import ssl
import subprocess
import uuid

import pytest

from conftest import BIN, client_args, issue_certificate, java_run, run_client, wait_for


def served_certificate(endpoint):
    """The PEM certificate a TLS handshake with ALPN h2 gets from `endpoint`, and the protocol
    ALPN chose."""
    host, port = endpoint.rsplit(":", 1)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection((host, int(port)), timeout=10) as raw, ctx.wrap_socket(raw) as tls:
        return ssl.DER_cert_to_PEM_cert(tls.getpeercert(binary_form=True)), tls.selected_alpn_protocol()


def pem_body(text):
    """The base64 of the first certificate in a PEM text, whitespace removed (for comparing)."""
    return "".join(text.split("-----BEGIN CERTIFICATE-----")[1].split("-----END CERTIFICATE-----")[0].split())


def make_certificate(directory, name, cn):
    """A self-signed certificate and key for `cn`, made by openssl: (cert path, key path)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-subj", f"/CN={cn}", "-days", "2", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def java_tls(ca):
    """RocketMQ's client TLS properties (TlsSystemConfig): TLS on every connection, the server's
    certificate checked against `ca`."""
    return ["-Dtls.enable=true", "-Dtls.test.mode.enable=false", "-Dtls.client.authServer=true",
            f"-Dtls.client.trustCertPath={ca}"]


@pytest.fixture
def enforcing(broker_factory, tmp_path):
    """A standalone broker that takes TLS only, with a CA's certificate: (broker, ca.crt)."""
    ca, cert, key = issue_certificate(tmp_path, ["DNS:localhost", "IP:127.0.0.1"])
    b = broker_factory(tls_mode="enforcing", tls_ca_file=str(ca), tls_cert_file=str(cert), tls_key_file=str(key))
    return b, ca


def test_with_tls_enforced_the_python_client_trusting_the_ca_works_and_a_plaintext_one_is_refused(enforcing,
                                                                                                  monkeypatch):
    broker, ca = enforcing
    topic = f"t-{uuid.uuid4().hex[:8]}"
    # gRPC's own variable: the roots its secure channels trust.
    monkeypatch.setenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", str(ca))
    sent = run_client("python", "send", broker, topic=topic, count=5, tls=True)
    got = run_client("python", "receive", broker, topic=topic, group="g", count=5, timeout=30, tls=True)
    assert sorted(m["id"] for m in got) == sorted(m["id"] for m in sent)
    rows = run_client("python", "send", broker, check=False, topic=topic, count=1, keep_going=True)
    assert not [r for r in rows if "id" in r], rows
    # Nor does a TLS client that trusts no one who signed the broker's certificate get in.
    monkeypatch.delenv("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH")
    rows = run_client("python", "send", broker, check=False, topic=topic, count=1, keep_going=True, tls=True)
    assert not [r for r in rows if "id" in r], rows


@pytest.mark.parametrize("version", ["5", "4"])
def test_with_tls_enforced_the_java_remoting_client_connects_over_tls_and_plaintext_is_refused(enforcing, version):
    broker, ca = enforcing
    topic = f"tls-java-{version}"
    code, rows, out = java_run("Producer", version, java_tls(ca), namesrv=broker.namesrv, topic=topic, count=20)
    assert code == 0 and rows[-1] == {"sent": 20}, out[-3000:]
    sent = sorted(r["id"] for r in rows[:-1])
    code, rows, out = java_run("PushConsumer", version, java_tls(ca), namesrv=broker.namesrv, topic=topic,
                               group=f"tls-g-{version}", expect=20, timeout=60)
    assert code == 0 and rows[-1]["received"] == 20, out[-3000:]
    assert sorted({r["id"] for r in rows[:-1]}) == sent
    code, rows, out = java_run("Producer", version, namesrv=broker.namesrv, topic=topic, count=1,
                               send_timeout_ms=3000)
    assert code != 0 and not [r for r in rows if "id" in r], out[-3000:]


def test_the_java_client_with_its_defaults_speaks_tls_where_plaintext_clients_also_connect(broker_factory):
    topic = f"t-{uuid.uuid4().hex[:8]}"
    broker = broker_factory()
    sent = run_client("java", "send", broker, topic=topic, count=5)
    got = run_client("python", "receive", broker, topic=topic, group="g", count=5, timeout=30)
    assert sorted(m["id"] for m in got) == sorted(m["id"] for m in sent)
    # The self-signed certificate made on first start is what the port serves, with HTTP/2.
    pem, alpn = served_certificate(broker.endpoint)
    assert alpn == "h2"
    assert pem_body(pem) == pem_body((broker.data_dir / "tls" / "self-signed.crt").read_text())
    # With TLS switched off, the same client with the same defaults cannot connect: it did speak TLS.
    plain = broker_factory(tls_mode="disabled")
    p = subprocess.run(client_args("java", "send", plain, topic=topic, count=1), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode != 0 and "ClientTlsHandler" in p.stderr, p.stderr[-2000:]
    assert run_client("python", "send", plain, topic=topic, count=1)


def test_the_self_signed_certificate_survives_a_restart(broker_factory):
    broker = broker_factory()
    before, _ = served_certificate(broker.endpoint)
    assert broker.stop() == 0
    broker.start()
    after, _ = served_certificate(broker.endpoint)
    assert pem_body(after) == pem_body(before)


def test_a_configured_certificate_is_served_and_a_rotated_one_replaces_it_without_a_restart(broker_factory, tmp_path):
    cert, key = make_certificate(tmp_path, "first", "ferrocket-first")
    broker = broker_factory(tls_cert_file=str(cert), tls_key_file=str(key))
    assert pem_body(served_certificate(broker.endpoint)[0]) == pem_body(cert.read_text())
    assert not (broker.data_dir / "tls").exists(), "no self-signed certificate beside a configured one"
    # Rotation, as cert-manager does it: new files in place of the old ones.
    new_cert, new_key = make_certificate(tmp_path, "second", "ferrocket-second")
    key.write_bytes(new_key.read_bytes())
    cert.write_bytes(new_cert.read_bytes())
    wait_for(lambda: pem_body(served_certificate(broker.endpoint)[0]) == pem_body(new_cert.read_text()), 15,
             "the rotated certificate to be served")
    topic = f"t-{uuid.uuid4().hex[:8]}"
    assert len(run_client("java", "send", broker, topic=topic, count=1)) == 1


def test_a_bad_certificate_stops_the_start_naming_the_file(broker_factory, tmp_path):
    cert, key = make_certificate(tmp_path, "good", "ferrocket")
    broken = tmp_path / "broken.key"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(AssertionError, match="unexpected first line") as e:
        broker_factory(tls_cert_file=str(cert), tls_key_file=str(broken))
    assert str(broken) in str(e.value), str(e.value)


def test_the_nameserver_port_takes_tls_grpc_plaintext_grpc_and_remoting(broker_factory):
    ns = broker_factory("namesrv")
    pem, alpn = served_certificate(ns.endpoint)
    assert alpn == "h2" and "BEGIN CERTIFICATE" in pem
    # Plaintext gRPC: the CLI asks it for the cluster.
    out = subprocess.run([str(BIN), "cluster", "status", "--json", "--namesrv", ns.endpoint], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0 and json.loads(out.stdout)["brokers"] == [], out.stderr
    # A Remoting request on the same port: GET_ALL_TOPIC_LIST_FROM_NAMESERVER (206), JSON header.
    with socket.create_connection(("127.0.0.1", ns.port), timeout=10) as s:
        header = b'{"code":206,"flag":0,"language":"JAVA","opaque":1,"serializeTypeCurrentRPC":"JSON","version":0}'
        s.sendall((4 + len(header)).to_bytes(4, "big") + len(header).to_bytes(4, "big") + header)
        length = int.from_bytes(s.recv(4), "big")
        assert 0 < length < 1 << 20
