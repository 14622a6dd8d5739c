"""Validate Kubernetes manifests offline: built-in kinds and the custom resources weaksound uses.

    python cluster/validate.py k8s/overlays/prod-gpu      # a kustomization (needs kubectl)
    python cluster/validate.py rendered.yaml ...           # plain multi-document YAML files

- Built-in kinds (Namespace, ServiceAccount, ConfigMap, ...): `kubernetes_validate` in strict
  mode (unknown fields are errors) against Kubernetes `KUBERNETES_VERSION`.
- RayJob / RayCluster (ray.io/v1) and PodMonitor / ServiceMonitor (monitoring.coreos.com/v1):
  the CRD schemas in k8s/schemas/, made strict (see `strict_schema`), after removing nulls.
- PrometheusRule: a small hand-written schema of the fields we use (no CRD schema is vendored);
  the rules themselves are checked by `promtool check rules` on cluster/prometheus/rules.yml.
- Any other kind is an error: nothing goes unvalidated silently.
"""
from __future__ import annotations

import copy
import functools
import json
import shutil
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "k8s" / "schemas"
KUBERNETES_VERSION = "1.32.0"

CR_SCHEMAS: dict[tuple[str, str], str] = {
    ("ray.io/v1", "RayJob"): "rayjob-v1.json",
    ("ray.io/v1", "RayCluster"): "raycluster-v1.json",
    ("monitoring.coreos.com/v1", "PodMonitor"): "podmonitor-v1.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-v1.json",
}
CR_KINDS = {kind: api for api, kind in CR_SCHEMAS}


def _strict_object(props: dict) -> dict:
    return {"type": "object", "additionalProperties": False, "properties": props}


_RULE = {
    "type": "object", "additionalProperties": False,
    "properties": {"record": {"type": "string"}, "alert": {"type": "string"}, "expr": {"type": "string"},
                   "for": {"type": "string"}, "keep_firing_for": {"type": "string"},
                   "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                   "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
    "required": ["expr"],
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
}
PROMETHEUS_RULE_SCHEMA: dict = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"}, "kind": {"const": "PrometheusRule"},
        "metadata": {"type": "object"},
        "spec": {"type": "object", "additionalProperties": False, "required": ["groups"], "properties": {
            "groups": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["name", "rules"],
                "properties": {"name": {"type": "string"}, "interval": {"type": "string"},
                               "rules": {"type": "array", "items": _RULE}}}}}},
    },
}


def strict_schema(schema: dict) -> dict:
    """A copy that rejects unknown fields and matches the API server's defaulting.

    - every object schema with ``properties``, no ``additionalProperties`` and no
      ``x-kubernetes-preserve-unknown-fields: true`` gets ``additionalProperties: false``;
    - properties that have a ``default`` are dropped from ``required`` (the API server fills
      them in before validating, e.g. workerGroupSpecs[].minReplicas/maxReplicas).
    """
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            props = node.get("properties")
            if isinstance(props, dict):
                if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
                    node["additionalProperties"] = False
                if isinstance(node.get("required"), list):
                    node["required"] = [r for r in node["required"]
                                        if not (isinstance(props.get(r), dict) and "default" in props[r])]
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def strip_nulls(obj: Any) -> Any:
    """Drop ``None`` values recursively (the API server prunes them before validation)."""
    if isinstance(obj, dict):
        return {k: strip_nulls(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [strip_nulls(v) for v in obj if v is not None]
    return obj


@functools.lru_cache(maxsize=None)
def _validator(filename: str):
    import jsonschema

    schema = json.loads((SCHEMA_DIR / filename).read_text())
    return jsonschema.Draft7Validator(strict_schema(schema))


def _describe(doc: dict) -> str:
    meta = doc.get("metadata") or {}
    return f"{doc.get('kind', '?')}/{meta.get('name', '?')}"


def validate_doc(doc: dict) -> list[str]:
    """Errors of one manifest (empty list: valid)."""
    if not isinstance(doc, dict):
        return [f"not a mapping: {doc!r:.60}"]
    doc = strip_nulls(doc)
    kind, api = doc.get("kind"), doc.get("apiVersion")
    where = _describe(doc)
    if not kind or not api:
        return [f"{where}: apiVersion and kind are required"]
    if kind in CR_KINDS:
        if api != CR_KINDS[kind]:
            return [f"{where}: apiVersion {api!r}, expected {CR_KINDS[kind]!r}"]
        validator = _validator(CR_SCHEMAS[(api, kind)])
        return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))]
    if kind == "PrometheusRule":
        import jsonschema

        validator = jsonschema.Draft7Validator(PROMETHEUS_RULE_SCHEMA)
        return [f"{where}: {'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(doc)]
    import kubernetes_validate

    try:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no schema for {api} {kind}: add one to cluster/validate.py"]
    except kubernetes_validate.ValidationError as e:
        path = ".".join(map(str, getattr(e, "path", ()) or ()))
        return [f"{where}: {path or '<root>'}: {e.message}"]
    return []


def validate_docs(docs: Iterable[dict]) -> list[str]:
    errors: list[str] = []
    for doc in docs:
        if doc is not None:
            errors.extend(validate_doc(doc))
    return errors


def kustomize_available() -> bool:
    return shutil.which("kubectl") is not None


def render_kustomization(path: Path) -> list[dict]:
    """`kubectl kustomize PATH` parsed into documents (RuntimeError with kubectl's message on failure)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise RuntimeError("kubectl is not installed; `kubectl kustomize` renders kustomizations")
    proc = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed:\n{proc.stderr.strip()}")
    return [d for d in yaml.safe_load_all(proc.stdout) if d is not None]


def load_yaml_docs(path: Path) -> list[dict]:
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print(__doc__)
        return 2
    errors: list[str] = []
    for arg in argv:
        path = Path(arg)
        docs = render_kustomization(path) if path.is_dir() else load_yaml_docs(path)
        errs = validate_docs(docs)
        print(f"{arg}: {len(docs)} manifests, {len(errs)} errors")
        errors += errs
    for e in errors:
        print("  " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
