"""k8s/: every manifest of the base and both overlays validated offline, plus the properties the
deployment relies on (stable run names, no keys, /dev/shm, GPUs, non-root, monitoring).

Custom resources are checked against the CRD schemas vendored in k8s/schemas (made strict:
unknown fields fail), built-in kinds with kubernetes-validate --strict (cluster/validate.py).
Rendering the overlays needs `kubectl kustomize`; without kubectl those tests skip, but the
base's own files are still validated one by one.
"""
from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path

import pytest
import yaml
from test_ops_prometheus import load_ops_module

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "k8s"
OVERLAYS = ("dev-cpu", "prod-gpu")


validate = load_ops_module("cluster/validate.py")
generate = load_ops_module("cluster/generate.py")

needs_kubectl = pytest.mark.skipif(not validate.kustomize_available(),
                                   reason="kubectl not installed: `kubectl kustomize` renders the overlays "
                                          "(the base files are still validated one by one)")


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if not validate.kustomize_available():
        pytest.skip("kubectl not installed: cannot render kustomizations")
    return {name: validate.render_kustomization(K8S / "overlays" / name) for name in OVERLAYS} | \
        {"base": validate.render_kustomization(K8S / "base")}


def _base_resource_files() -> list[Path]:
    kust = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    return [K8S / "base" / r for r in kust["resources"]]


def _pod_templates(doc: dict):
    """(where, pod template) for every Ray pod in a RayJob/RayCluster, submitter included."""
    spec = doc["spec"]
    cluster = spec["rayClusterSpec"] if doc["kind"] == "RayJob" else spec
    yield "head", cluster["headGroupSpec"]["template"]
    for group in cluster.get("workerGroupSpecs", []):
        yield f"worker:{group['groupName']}", group["template"]
    if doc["kind"] == "RayJob" and "submitterPodTemplate" in spec:
        yield "submitter", spec["submitterPodTemplate"]


def _ray_docs(docs):
    return [d for d in docs if d["kind"] in ("RayJob", "RayCluster")]


# -- offline validation ---------------------------------------------------------------------------

def test_schemas_are_vendored_with_their_licenses():
    for name in set(validate.CR_SCHEMAS.values()) | {"LICENSE", "LICENSE.prometheus-operator",
                                                      "NOTICE.prometheus-operator", "README.md"}:
        assert (K8S / "schemas" / name).is_file(), name
    shared = REPO.parent / "shared" / "k8s-schemas"
    if shared.is_dir():  # same bytes as the team's reference copy, when it is around
        for name in validate.CR_SCHEMAS.values():
            assert (K8S / "schemas" / name).read_bytes() == (shared / name).read_bytes(), name


def test_base_files_validate_one_by_one_without_kubectl():
    files = _base_resource_files()
    docs = [d for f in files for d in validate.load_yaml_docs(f)]
    assert {d["kind"] for d in docs} >= {"RayJob", "RayCluster", "PodMonitor", "ServiceAccount", "PrometheusRule"}
    assert validate.validate_docs(docs) == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_files_are_plain_valid_yaml(overlay):
    kust = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    assert kust["resources"] == ["../../base"]
    for patch in kust["patches"]:
        doc = yaml.safe_load((K8S / "overlays" / overlay / patch["path"]).read_text())
        if isinstance(doc, list):  # JSON 6902 ops
            assert all(op["op"] in ("add", "remove", "replace", "test") and op["path"].startswith("/") for op in doc)
        else:
            assert validate.validate_doc(doc) == []


@needs_kubectl
@pytest.mark.parametrize("name", ("base",) + OVERLAYS)
def test_rendered_manifests_validate(rendered, name):
    docs = rendered[name]
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ServiceAccount", "ConfigMap", "ConfigMap",
                            "PodMonitor", "PodMonitor", "PrometheusRule", "RayCluster", "RayJob", "RayJob", "RayJob"]
                           + ["NetworkPolicy"] * 4)
    assert validate.validate_docs(docs) == []
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"weaksound"}


def test_strict_validation_rejects_unknown_fields_and_wrong_api_versions():
    docs = validate.load_yaml_docs(K8S / "base" / "rayjob-train.yaml")
    job = docs[0]
    typo = copy.deepcopy(job)
    typo["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replica"] = 2
    assert any("'replica' was unexpected" in e for e in validate.validate_doc(typo))
    wrong_type = copy.deepcopy(job)
    wrong_type["spec"]["backoffLimit"] = "three"
    assert any("backoffLimit" in e for e in validate.validate_doc(wrong_type))
    old_api = copy.deepcopy(job)
    old_api["apiVersion"] = "ray.io/v1alpha1"
    assert validate.validate_doc(old_api) == ["RayJob/weaksound-train: apiVersion 'ray.io/v1alpha1', expected 'ray.io/v1'"]
    pod_typo = copy.deepcopy(job)
    pod_typo["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["envfrom"] = []
    assert validate.validate_doc(pod_typo)
    # defaulted-but-required fields may be left out, as the API server fills them in; nulls are pruned
    defaulted = copy.deepcopy(job)
    for key in ("minReplicas", "maxReplicas"):
        del defaulted["spec"]["rayClusterSpec"]["workerGroupSpecs"][0][key]
    defaulted["metadata"]["labels"] = None
    assert validate.validate_doc(defaulted) == []
    assert validate.validate_doc({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x"},
                                  "automountServiceAccountTokens": True})
    assert validate.validate_doc({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})


# -- properties the deployment relies on -----------------------------------------------------------

def _flag(entrypoint: str, flag: str) -> str | None:
    tokens = entrypoint.split()
    return tokens[tokens.index(flag) + 1] if flag in tokens else None


@needs_kubectl
@pytest.mark.parametrize("name", ("base",) + OVERLAYS)
def test_rayjobs_retry_and_resume_under_a_stable_run_name(rendered, name):
    jobs = {d["metadata"]["name"]: d for d in rendered[name] if d["kind"] == "RayJob"}
    assert set(jobs) == {"weaksound-prep", "weaksound-train", "weaksound-transfer"}
    for job in jobs.values():
        spec = job["spec"]
        assert spec["backoffLimit"] >= 1 and spec["shutdownAfterJobFinishes"] is True
        # KubeRay pastes the entrypoint into a bash script after `ray job submit --`: shell
        # operators must be quoted (inside bash -c '...') or they would run in the submitter pod
        tokens = shlex.split(spec["entrypoint"])
        assert not {";", "&&", "||", "|", "&", ">", "<"} & set(tokens), spec["entrypoint"]
        assert not any(t.endswith(";") for t in tokens), spec["entrypoint"]
    # apply starts prep only; train and transfer wait, suspended, until their input exists
    assert {n: j["spec"].get("suspend", False) for n, j in jobs.items()} == \
        {"weaksound-prep": False, "weaksound-train": True, "weaksound-transfer": True}
    train = jobs["weaksound-train"]["spec"]["entrypoint"]
    assert train.startswith("weaksound train ")
    assert _flag(train, "--name") == "weaksound-train"           # == metadata.name: retries resume
    assert _flag(train, "--out").startswith("s3://")
    transfer = jobs["weaksound-transfer"]["spec"]["entrypoint"]
    assert f"{_flag(train, '--out')}/weaksound-train/model" in transfer  # embeds that run's model


def _commands(entrypoint: str) -> list[list[str]]:
    """The `weaksound ...` commands of an entrypoint (unwrapping bash -c '...; ...')."""
    tokens = shlex.split(entrypoint)
    if tokens[:2] == ["bash", "-c"]:
        script = tokens[2]
        return [shlex.split(part) for part in script.split(";") if part.strip() and part.strip() != "set -e"]
    return [tokens]


CLI_PARSERS = {"prep": "data_prep.cli", "train": "trainer.main", "embed": "inference.embed_cli",
               "transfer": "transfer.cli"}


@needs_kubectl
@pytest.mark.parametrize("name", ("base",) + OVERLAYS)
def test_entrypoints_parse_with_the_real_command_lines(rendered, name):
    """Every `weaksound STAGE ...` in a RayJob is accepted by that stage's argparse parser."""
    import importlib

    for job in (d for d in rendered[name] if d["kind"] == "RayJob"):
        for argv in _commands(job["spec"]["entrypoint"]):
            assert argv[0] == "weaksound" and argv[1] in CLI_PARSERS, argv
            parser = importlib.import_module(CLI_PARSERS[argv[1]]).build_parser()
            try:
                args = parser.parse_args(argv[2:])
            except SystemExit:
                pytest.fail(f"{job['metadata']['name']}: `{shlex.join(argv)}` does not parse")
            assert getattr(args, "no_progress", True), argv  # no progress bars in job logs


@needs_kubectl
@pytest.mark.parametrize("name", ("base",) + OVERLAYS)
def test_ray_pods_are_non_root_with_shm_and_s3_without_keys(rendered, name):
    docs = rendered[name]
    text = json.dumps(docs)
    for secret_word in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "aws_secret"):
        assert secret_word not in text
    assert not [d for d in docs if d["kind"] == "Secret"]
    for doc in _ray_docs(docs):
        for where, template in _pod_templates(doc):
            pod = template["spec"]
            label = f"{doc['metadata']['name']} {where}"
            assert pod["securityContext"]["runAsNonRoot"] is True, label
            assert pod["securityContext"]["runAsUser"] != 0, label
            assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "weaksound", label
            for c in pod["containers"]:
                assert c["securityContext"]["allowPrivilegeEscalation"] is False, label
                assert c["securityContext"]["capabilities"]["drop"] == ["ALL"], label
                assert c["securityContext"]["readOnlyRootFilesystem"] is True, label
                assert c["resources"]["limits"] and c["resources"]["requests"], label
                writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
                assert "/tmp" in writable, label  # the one place Ray and Python write besides /dev/shm
            if where == "submitter":
                env = {e["name"]: e for e in pod["containers"][0]["env"]}
                assert env["RAY_AUTH_MODE"]["value"] == "token", label
                assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == \
                    {"name": "weaksound-ray-token", "key": "auth_token"}, label
                continue
            # the head's account may call the API server (KubeRay's autoscaler); workers' may not
            assert pod["serviceAccountName"] == ("weaksound-ray" if where == "head" else "weaksound-ray-worker"), label
            container = pod["containers"][0]
            assert {"secretRef": {"name": "weaksound-s3", "optional": True}} in container["envFrom"], label
            assert {"configMapRef": {"name": "weaksound-env"}} in container["envFrom"], label
            shm = [v for v in pod["volumes"] if v["name"] == "dshm"]
            assert shm and shm[0]["emptyDir"]["medium"] == "Memory", label
            assert {"name": "dshm", "mountPath": "/dev/shm"} in container["volumeMounts"], label
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            assert ports["metrics"] == 8080, label  # what the PodMonitors scrape
            if where == "head":
                assert {"as-metrics", "dash-metrics"} <= set(ports), label
        cluster = doc["spec"]["rayClusterSpec"] if doc["kind"] == "RayJob" else doc["spec"]
        assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
        assert cluster["authOptions"] == {"mode": "token", "secretName": "weaksound-ray-token"}
    # the env ConfigMap referenced by name exists with exactly that name (no hash suffix)
    assert "weaksound-env" in {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}


@needs_kubectl
def test_gpu_requests_and_tolerations_only_where_gpus_are(rendered):
    def gpu_groups(docs):
        out = {}
        for doc in _ray_docs(docs):
            for where, template in _pod_templates(doc):
                c = template["spec"]["containers"][0]
                gpus = c["resources"]["limits"].get("nvidia.com/gpu")
                tolerates = any(t.get("key") == "nvidia.com/gpu" for t in template["spec"].get("tolerations", []))
                out[(doc["metadata"]["name"], where)] = (gpus, tolerates)
        return out

    prod = gpu_groups(rendered["prod-gpu"])
    assert prod[("weaksound-train", "worker:gpu")] == ("1", True)
    assert prod[("weaksound-transfer", "worker:gpu")] == ("1", True)
    for key, (gpus, tolerates) in prod.items():
        assert (gpus is not None) == tolerates == (key[1] == "worker:gpu"), key
    train = next(d for d in rendered["prod-gpu"] if d["metadata"]["name"] == "weaksound-train")
    group = train["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] \
        == int(_flag(train["spec"]["entrypoint"], "--workers"))       # one DDP rank per GPU
    assert "--use-gpu" in train["spec"]["entrypoint"].split()

    dev = gpu_groups(rendered["dev-cpu"])
    assert all(g == (None, False) for g in dev.values()), dev
    dev_text = json.dumps(rendered["dev-cpu"])
    assert "nvidia.com/gpu" not in dev_text and "--use-gpu" not in dev_text
    assert "persistentVolumeClaim" not in dev_text  # the synthetic corpus needs no raw-audio volume


@needs_kubectl
def test_overlay_specifics(rendered):
    for account in ("weaksound-ray", "weaksound-ray-worker"):
        sa = {name: next(d for d in docs if d["kind"] == "ServiceAccount" and d["metadata"]["name"] == account)
              for name, docs in rendered.items()}
        assert sa["prod-gpu"]["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
        assert "annotations" not in sa["dev-cpu"]["metadata"]
    images = {name: {c["image"] for d in _ray_docs(docs) for _, t in _pod_templates(d) for c in t["spec"]["containers"]}
              for name, docs in rendered.items()}
    assert images["dev-cpu"] == {"weaksound:dev"}
    assert len(images["prod-gpu"]) == 1 and images["prod-gpu"].pop().endswith("/weaksound:0.1.0")


@needs_kubectl
def test_monitoring_objects(rendered):
    docs = rendered["prod-gpu"]
    monitors = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PodMonitor"}
    head, workers = monitors["weaksound-ray-head"], monitors["weaksound-ray-workers"]
    assert head["spec"]["selector"]["matchLabels"]["ray.io/node-type"] == "head"
    assert workers["spec"]["selector"]["matchLabels"]["ray.io/node-type"] == "worker"
    assert [e["port"] for e in head["spec"]["podMetricsEndpoints"]] == ["metrics", "as-metrics", "dash-metrics"]
    assert [e["port"] for e in workers["spec"]["podMetricsEndpoints"]] == ["metrics"]
    # the pods they select carry the port names they scrape
    for doc in _ray_docs(docs):
        for where, template in _pod_templates(doc):
            if where != "submitter":
                names = {p["name"] for p in template["spec"]["containers"][0]["ports"]}
                monitor = head if where == "head" else workers
                assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= names
    # dashboards ConfigMap == cluster/grafana, labelled for the Grafana sidecar
    cm = next(d for d in docs if d["metadata"]["name"] == "weaksound-grafana-dashboards")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    expected = {p.name: p.read_text() for p in (REPO / "cluster" / "grafana").glob("*.json")}
    assert cm["data"] == expected
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((REPO / "cluster" / "prometheus" / "rules.yml").read_text())["groups"]


def test_kubernetes_copies_are_up_to_date():
    """k8s/base/monitoring holds generated copies of cluster/grafana and rules.yml."""
    assert generate.stale_files() == [], "run: python cluster/generate.py"
    for src in (REPO / "cluster" / "grafana").glob("*.json"):
        assert (K8S / "base" / "monitoring" / "dashboards" / src.name).read_bytes() == src.read_bytes()


# -- access --------------------------------------------------------------------------------------

def _base_docs() -> list[dict]:
    return [d for f in _base_resource_files() for d in validate.load_yaml_docs(f)]


def test_worker_pods_get_no_kubernetes_api_token():
    accounts = {d["metadata"]["name"]: d for d in _base_docs() if d["kind"] == "ServiceAccount"}
    assert accounts["weaksound-ray-worker"]["automountServiceAccountToken"] is False
    assert accounts["weaksound-ray"]["automountServiceAccountToken"] is True  # KubeRay's autoscaler needs it


def test_network_policies_admit_only_the_projects_pods_prometheus_and_the_operator():
    policies = {d["metadata"]["name"]: d["spec"] for d in _base_docs() if d["kind"] == "NetworkPolicy"}
    deny = policies.pop("weaksound-default-deny-ingress")
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress"]}  # everything else is an exception
    part_of = {"app.kubernetes.io/part-of": "weaksound"}
    for name, spec in policies.items():
        assert spec["policyTypes"] == ["Ingress"], name
        assert part_of.items() <= spec["podSelector"]["matchLabels"].items(), name
        for rule in spec["ingress"]:
            assert rule["from"], name  # an empty `from` would admit every source
            for source in rule["from"]:
                assert source.get("podSelector", {}).get("matchLabels"), name
    internal = policies["weaksound-ray-internal"]["ingress"]
    assert internal == [{"from": [{"podSelector": {"matchLabels": part_of}}]}]
    (scrape,) = policies["weaksound-ray-metrics-from-prometheus"]["ingress"]
    assert {p["port"] for p in scrape["ports"]} == {8080, 44217, 44227}
    (operator,) = policies["weaksound-ray-dashboard-from-kuberay"]["ingress"]
    assert [p["port"] for p in operator["ports"]] == [8265]


def test_the_ray_token_secret_is_referenced_but_never_written_in_a_manifest():
    text = "\n".join(p.read_text() for p in (K8S / "base").rglob("*.yaml"))
    assert "weaksound-ray-token" in text
    assert not [d for d in _base_docs() if d["kind"] == "Secret"]
    assert "RAY_AUTH_MODE=disabled" not in text and "mode: disabled" not in text
