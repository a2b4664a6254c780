"""The Helm chart, with Helm's own code (PyPI `helm-python-sdk` binds Helm v4's Go SDK): linted
strictly, rendered with several value sets, and every rendered object validated against the
Kubernetes 1.33 schemas (strict). RBAC is checked to be least privilege, and bad values are
refused by the chart's values schema."""
import pathlib

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ferrocket"
K8S_VERSION = "1.33.0"


def render(values=None, namespace="ferrocket-system"):
    chart = helm.Chart.load(str(CHART))
    out = chart.render(values or {}, name="ferrocket", namespace=namespace, is_install=True)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_the_chart_lints_clean_in_strict_mode():
    for values in ({}, {"operator": {"watchNamespaces": ["a", "b"]}, "networkPolicy": {"enabled": True}}):
        report = helm.lint(str(CHART), values, strict=True, namespace="ferrocket-system", kube_version="v1.33.0")
        problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
        assert not problems, problems


VALUE_SETS = {
    "defaults": {},
    "namespaced": {"operator": {"watchNamespaces": ["team-a", "team-b"]}},
    "everything-on": {
        "podDisruptionBudget": {"enabled": True},
        "networkPolicy": {"enabled": True, "metricsFrom": [{"namespaceSelector": {}}]},
        "metrics": {"serviceMonitor": {"enabled": True}},
    },
    "no-operator": {"operator": {"enabled": False}},
}


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_rendered_object_is_valid_for_kubernetes(name):
    docs = render(VALUE_SETS[name])
    assert docs
    for d in docs:
        if d["kind"] == "ServiceMonitor":  # the Prometheus Operator's CRD, not a Kubernetes kind
            assert d["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(d, K8S_VERSION, strict=True)


def test_the_operator_runs_restricted_with_probes_and_leader_election():
    docs = render()
    (dep,) = by_kind(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 65532
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] and sc["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert c["args"] == ["run"]
    assert (c["livenessProbe"]["httpGet"]["path"], c["readinessProbe"]["httpGet"]["path"]) == ("/healthz", "/readyz")
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["LEADER_ELECTION"] == "true" and env["LEASE_NAME"] == "ferrocket-operator"
    assert dep["spec"]["replicas"] == 2
    assert not by_kind(render({"operator": {"enabled": False}}), "Deployment")


def rules(docs):
    return [r for d in docs if d["kind"] in ("ClusterRole", "Role") for r in d["rules"]]


def test_rbac_is_least_privilege():
    docs = render()
    for r in rules(docs):
        assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"], r
        assert not any(res.startswith("pods/") for res in r["resources"]), f"no pod subresources (exec): {r}"
        # Secrets: read one by name (the credentials and the TLS CA a BrokerSet names) and create
        # the generated credentials; never listed, watched, changed or deleted.
        assert "secrets" not in r["resources"] or (r["resources"] == ["secrets"]
                                                   and sorted(r["verbs"]) == ["create", "get"]), r
    pods = next(r for r in rules(docs) if r["resources"] == ["pods"])
    assert sorted(pods["verbs"]) == ["delete", "get", "list", "watch"], "pods are read and deleted (rolled), never created"
    # Leases only in the release namespace.
    lease_roles = [d for d in docs if any("leases" in r["resources"] for r in d.get("rules", []))]
    assert [(d["kind"], d["metadata"]["namespace"]) for d in lease_roles] == [("Role", "ferrocket-system")]


def test_watched_namespaces_get_roles_instead_of_a_cluster_role():
    docs = render({"operator": {"watchNamespaces": ["team-a", "team-b"]}})
    assert not by_kind(docs, "ClusterRole") and not by_kind(docs, "ClusterRoleBinding")
    namespaces = sorted(d["metadata"]["namespace"] for d in by_kind(docs, "RoleBinding"))
    assert namespaces == ["ferrocket-system", "team-a", "team-b"]
    (dep,) = by_kind(docs, "Deployment")
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["WATCH_NAMESPACES"] == "team-a,team-b"


def test_the_chart_carries_the_generated_crds():
    chart = helm.Chart.load(str(CHART))
    names = sorted(pathlib.PurePath(c["name"]).name for c in chart.crds)
    assert names == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))


@pytest.mark.parametrize(
    "values, words",
    [
        ({"operator": {"replicas": -1}}, "replicas"),
        ({"operator": {"image": {"pullPolicy": "Sometimes"}}}, "pullPolicy"),
        ({"operator": {"watchNamespaces": ["Not_A_Namespace"]}}, "watchNamespaces"),
        ({"operatr": {}}, "operatr"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(values, words):
    with pytest.raises(helm.HelmError) as e:
        render(values)
    assert words in str(e.value), str(e.value)
