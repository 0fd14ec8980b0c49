"""Renders and checks the Helm chart with the real tools, for tests/chart.rs.

Reads one JSON request from stdin and writes one JSON answer to stdout; it judges nothing
itself (the Rust test asserts), it only runs the tools and reports what they said:

  {"chart": "charts/wa-gateway", "kube_versions": ["1.25.0", "1.37.0"],
   "cases": [{"id": "...", "values_file": "ci/x.yaml" | null, "values": {...} | null,
              "lint": true, "validate": true}]}

For each case: `helm lint --strict` (Helm v4's SDK, through helm-python-sdk) once per Kubernetes
version, `helm template` (Chart.render), and kubernetes-validate (strict: unknown fields are
errors) of every rendered object against each version's schemas.
"""

import json
import sys

import helm_python as helm
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError, ValidationError


def merge(base, over):
    """Values files layered like Helm's -f: maps merge, anything else is replaced."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base.get(k), v) if k in base else v
        return out
    return over


def run_case(chart_dir, versions, case):
    values = {}
    if case.get("values_file"):
        with open(f"{chart_dir}/{case['values_file']}") as f:
            values = helm.values_from_yaml(f.read()) or {}
    if case.get("values"):
        values = merge(values, case["values"])
    out = {"id": case["id"], "lint": [], "error": None, "rendered": {}, "objects": []}
    if case.get("lint", True):
        for v in versions:
            report = helm.lint(chart_dir, values, strict=True, kube_version=f"v{v}")
            out["lint"].append({"kube_version": v, "messages": report.get("messages", []),
                                "errors": report.get("errors", [])})
    try:
        with helm.Chart.load(chart_dir) as chart:
            rendered = chart.render(values, name=case.get("release", "wa-gateway"),
                                    namespace=case.get("namespace", "wa"), is_install=True)
    except helm.HelmError as e:
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    out["rendered"] = rendered
    for template, text in sorted(rendered.items()):
        if template.endswith("NOTES.txt"):
            continue
        for obj in yaml.safe_load_all(text):
            if not obj:
                continue
            checks = []
            if case.get("validate", True):
                for v in versions:
                    try:
                        kubernetes_validate.validate(obj, v, strict=True)
                        checks.append({"kube_version": v, "result": "ok"})
                    except SchemaNotFoundError as e:
                        checks.append({"kube_version": v, "result": "no_schema", "message": e.message})
                    except ValidationError as e:
                        path = ".".join(str(p) for p in e.path)
                        checks.append({"kube_version": v, "result": "invalid",
                                       "message": f"{path}: {e.message}"})
            out["objects"].append({"template": template, "object": obj, "validation": checks})
    return out


def main():
    req = json.load(sys.stdin)
    versions = req["kube_versions"]
    answer = {
        "helm_sdk_version": helm.helm_sdk_version(),
        "kubernetes_validate_version": kubernetes_validate.__version__
        if hasattr(kubernetes_validate, "__version__") else None,
        "cases": [run_case(req["chart"], versions, c) for c in req["cases"]],
    }
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
