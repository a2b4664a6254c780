"""The operator's output checked against the real Kubernetes schemas, offline: every CRD and
every object rendered for the example BrokerSet is validated with `kubernetes-validate --strict`
(the official OpenAPI schemas of Kubernetes 1.33, unknown fields refused), and every example
custom resource is validated against our own CRD schema."""
import json
import pathlib
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
OPERATOR = ROOT / "target" / "release" / "ferrocket-operator"
K8S_VERSION = "1.33.0"
EXAMPLES = sorted((ROOT / "examples" / "kubernetes").glob("*.yaml"))
CRDS = sorted((ROOT / "crds").glob("*.yaml"))


def validate_strict(obj):
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", CRDS, ids=lambda p: p.name)
def test_every_crd_is_a_valid_apiextensions_v1_object(path):
    crd = yaml.safe_load(path.read_text())
    validate_strict(crd)
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["group"] == "ferrocket.io" and version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["shortNames"]


def rendered(path):
    out = subprocess.run([str(OPERATOR), "render", "--file", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_every_rendered_object_is_valid_for_kubernetes():
    objects = rendered(ROOT / "examples" / "kubernetes" / "brokerset.yaml")
    kinds = sorted({o["kind"] for o in objects})
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "StatefulSet"], kinds
    for o in objects:
        validate_strict(o)


def test_a_bad_object_is_caught_by_the_validation():
    """The validation above can fail: an unknown field and a wrong type are refused."""
    sts = next(o for o in rendered(ROOT / "examples" / "kubernetes" / "brokerset.yaml") if o["kind"] == "StatefulSet")
    sts["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(sts)


def crd_schema(kind):
    for path in CRDS:
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    raise AssertionError(f"no CRD for {kind}")


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_matches_its_crd_schema(path):
    cr = yaml.safe_load(path.read_text())
    jsonschema.Draft7Validator(crd_schema(cr["kind"])).validate(cr)


def test_the_crd_schema_refuses_out_of_range_and_unknown_values():
    schema = crd_schema("BrokerSet")
    cr = yaml.safe_load((ROOT / "examples" / "kubernetes" / "brokerset.yaml").read_text())
    for bad in ({"brokerGroups": 0}, {"replication": "Eventually"}, {"slavesPerGroup": 9}):
        broken = json.loads(json.dumps(cr))
        broken["spec"].update(bad)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.Draft7Validator(schema).validate(broken)
