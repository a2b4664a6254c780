"""Authentication and access rules with the official clients, unchanged: a broker with
`auth_enabled` takes only signed requests, gRPC (the Python client's `Credentials`) and Remoting
(the Java client's `AclClientRPCHook`, 5.x and 4.x, and the Go client's credentials) alike; users
and their rules are made with `ferrocket user create` and `ferrocket acl create`, signed by the
cluster's super user from the same variables the broker reads; refusals come back as
UNAUTHORIZED / FORBIDDEN (gRPC 40100 / 40300) and NO_PERMISSION (Remoting 16) and are counted by
reason in `/metrics`.
"""
import os
import subprocess

import pytest

from conftest import BIN, CLIENTS, client_args, free_port, http_get, java_run, lines, run_client

SUPER = {"FERROCKET_AUTH_ACCESS_KEY": "cluster", "FERROCKET_AUTH_SECRET_KEY": "cluster-secret"}
AUTH = {"auth_enabled": True, "auth_access_key": "cluster", "auth_secret_key": "cluster-secret"}


@pytest.fixture
def secured(broker_factory):
    b = broker_factory(metrics_listen=f"127.0.0.1:{free_port()}", **AUTH)
    user = [str(BIN), "user", "create", "alice", "--secret-key", "alice-secret", "--server", b.endpoint]
    refused = subprocess.run(user, capture_output=True, text=True, timeout=30,
                             env={k: v for k, v in os.environ.items() if not k.startswith("FERROCKET_AUTH_")})
    assert refused.returncode != 0 and "no credentials" in refused.stderr, refused
    subprocess.run(user, capture_output=True, text=True, timeout=30, check=True, env={**os.environ, **SUPER})
    # alice may publish to and consume from the auth-* topics as the auth-* groups; nothing else.
    for resource in ["Topic:auth-*", "Group:auth-*"]:
        subprocess.run([str(BIN), "acl", "create", "--user", "alice", "--resource", resource, "--actions", "pub,sub",
                        "--server", b.endpoint], capture_output=True, text=True, timeout=30, check=True,
                       env={**os.environ, **SUPER})
    return b


def metrics(b):
    status, body = http_get(int(b.config["metrics_listen"].rsplit(":", 1)[1]), "/metrics")
    assert status == 200, body
    return body


def test_python_grpc_client_signs_in_and_the_unsigned_are_refused(secured):
    sent = run_client("python", "send", secured, topic="auth-py", count=20, access_key="alice", secret_key="alice-secret")
    ids = sorted(r["id"] for r in sent if "id" in r)
    assert len(ids) == 20, sent
    got = run_client("python", "receive", secured, topic="auth-py", count=20, group="auth-g", timeout=30,
                     access_key="alice", secret_key="alice-secret")
    assert sorted(r["id"] for r in got if "id" in r) == ids

    # A topic outside alice's rules: its route query is FORBIDDEN.
    rows = run_client("python", "send", secured, check=False, topic="payments", count=1, keep_going=True,
                      access_key="alice", secret_key="alice-secret")
    assert [r for r in rows if "error" in r] and not [r for r in rows if "id" in r], rows
    assert any(l.startswith('ferrocket_auth_refused_total{protocol="grpc",reason="denied"} ')
               for l in metrics(secured).splitlines())

    # The Python client reports a refused route query as "failed to fetch topic route" (its log
    # has the 40100 and the broker's message); the broker's counters say why it refused.
    for reason, creds in [("no_credentials", {}), ("bad_signature", {"access_key": "alice", "secret_key": "guessed"}),
                          ("unknown_user", {"access_key": "mallory", "secret_key": "whatever"})]:
        rows = run_client("python", "send", secured, check=False, topic="auth-py", count=1, keep_going=True, **creds)
        assert [r for r in rows if "error" in r] and not [r for r in rows if "id" in r], (creds, rows)
        line = f'ferrocket_auth_refused_total{{protocol="grpc",reason="{reason}"}} '
        assert any(l.startswith(line) and int(l.split()[-1]) > 0 for l in metrics(secured).splitlines()), reason


@pytest.mark.parametrize("version", ["5", "4"])
def test_java_remoting_client_signs_with_the_acl_hook(secured, version):
    ns, topic = secured.namesrv, f"auth-java-{version}"
    code, rows, _ = java_run("Producer", version=version, namesrv=ns, topic=topic, count=30,
                             access_key="alice", secret_key="alice-secret")
    assert code == 0 and rows[-1] == {"sent": 30}, rows[-3:]
    sent = sorted(r["id"] for r in rows[:-1])
    code, rows, out = java_run("PushConsumer", version=version, namesrv=ns, topic=topic, group=f"auth-g-{version}",
                               expect=30, timeout=60, access_key="alice", secret_key="alice-secret")
    assert code == 0 and rows[-1]["received"] == 30, out[-3000:]
    assert sorted({r["id"] for r in rows[:-1]}) == sent

    code, rows, out = java_run("Producer", version=version, namesrv=ns, topic="payments", count=1,
                               access_key="alice", secret_key="alice-secret", send_timeout_ms=3000)
    assert code != 0 and "may not PUB Topic:payments" in out, out[-3000:]
    code, rows, out = java_run("Producer", version=version, namesrv=ns, topic=topic, count=1,
                               access_key="alice", secret_key="guessed-secret", send_timeout_ms=3000)
    assert code != 0 and "CODE: 16" in out, out[-3000:]
    code, rows, out = java_run("Producer", version=version, namesrv=ns, topic=topic, count=1, send_timeout_ms=3000)
    assert code != 0 and "CODE: 16" in out, out[-3000:]
    text = metrics(secured)
    assert 'ferrocket_auth_refused_total{protocol="remoting",reason="bad_signature"}' in text, text
    assert 'ferrocket_auth_refused_total{protocol="remoting",reason="no_credentials"}' in text, text


def test_go_remoting_client_signs_with_its_credentials(secured):
    go = CLIENTS / "go" / "ferrocket-e2e-go"
    assert go.exists(), "the Go driver is not built: go build in e2e/clients/go"

    def run(role, **opts):
        args = [str(go), role, "--namesrv", secured.namesrv]
        for k, v in opts.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        p = subprocess.run(args, capture_output=True, text=True, timeout=120)
        return p.returncode, lines(p.stdout), p.stdout + p.stderr

    code, rows, out = run("producer", topic="auth-go", count=20, access_key="alice", secret_key="alice-secret")
    assert code == 0 and rows[-1] == {"sent": 20}, out[-3000:]
    sent = sorted(r["id"] for r in rows[:-1])
    code, rows, out = run("consumer", topic="auth-go", group="auth-go-g", count=20, timeout=60,
                          access_key="alice", secret_key="alice-secret")
    assert code == 0, out[-3000:]
    assert sorted({r["id"] for r in rows if "id" in r}) == sent
    code, rows, out = run("producer", topic="auth-go", count=1, access_key="alice", secret_key="guessed-secret")
    assert [r for r in rows if "error" in r] and "CODE: 16" in out, out[-3000:]


@pytest.mark.parametrize("kind", ["node", "rust"])
def test_node_and_rust_grpc_clients_sign_in_with_their_credentials(secured, kind):
    # The Rust client (rocketmq 5.0.0) sends x-mq-date-time as RFC 3339 with its local offset and
    # nanoseconds, the others as yyyyMMdd'T'HHmmss'Z': both are read.
    creds = {"access_key": "alice", "secret_key": "alice-secret"}
    topic = f"auth-{kind}"
    sent = run_client(kind, "send", secured, topic=topic, count=10, **creds)
    got = run_client(kind, "receive", secured, topic=topic, group=f"auth-g-{kind}", count=10, timeout=30, **creds)
    assert sorted(m["id"] for m in got) == sorted(m["id"] for m in sent)
    p = subprocess.run(client_args(kind, "send", secured, topic=topic, count=1, access_key="alice",
                                   secret_key="guessed-secret"), capture_output=True, text=True, timeout=90)
    assert p.returncode != 0 and not [r for r in lines(p.stdout) if "id" in r], p.stdout[-2000:]
