"""The Helm chart: lint, render (default, DaemonSet/hostNetwork, everything-on), validate.

Rendering and linting use Helm's own Go SDK (helm-python-sdk bundles it: no helm binary),
every object is validated strictly against the Kubernetes schemas (kubernetes-validate ships
them: no network), and the output passes yamllint. Every flag the chart passes to
`silex controller` must be one `silex controller --help` lists.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

helm = pytest.importorskip("helm_python", reason="helm-python-sdk (Helm's SDK) is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate")
yamllint_linter = pytest.importorskip("yamllint.linter")
yamllint_config = pytest.importorskip("yamllint.config")

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "silex"
DASHBOARD = CHART / "dashboards" / "silex.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
NAMESPACE = "ingress"
RELEASE = "silex"
KUBE_VERSION = "1.30.0"

DAEMONSET: dict[str, Any] = {
    "kind": "DaemonSet",
    "hostNetwork": True,
    "hostPort": {"enabled": True},
    "service": {"type": "ClusterIP"},
    "podDisruptionBudget": {"enabled": False},
}
EVERYTHING: dict[str, Any] = {
    "image": {"repository": "registry.example/silex", "tag": "1.2.3"},
    "ingressClass": {"default": True},
    "service": {
        "type": "NodePort",
        "http": {"port": 80, "nodePort": 30080},
        "https": {"port": 443, "nodePort": 30443},
        "externalTrafficPolicy": "Local",
    },
    "controller": {
        "watchNamespaces": ["team-a", "team-b"],
        "watchIngressWithoutClass": True,
        "publishStatusAddress": "203.0.113.10",
        "defaultSslCertificate": "certs/wildcard",
        "workers": 2,
        "hsts": True,
        "enableH2c": True,
        "statusPage": False,
        "upstreamSendTimeout": "30s",
        "trustedProxies": ["10.0.0.0/8"],
        "extraArgs": ["--max-body-size=8m"],
        "logLevel": "debug",
        "logFormat": "json",
        "gracePeriodSeconds": 60,
    },
    "terminationGracePeriodSeconds": 90,
    "rbac": {"namespacedSecrets": True},
    "autoscaling": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "grafanaDashboard": {
        "enabled": True,
        "namespace": "monitoring",
        "annotations": {"grafana_folder": "Ingress"},
    },
    "fullnameOverride": "edge",
}
VARIANTS = {"default": {}, "daemonset-hostnetwork": DAEMONSET, "everything": EVERYTHING}

YAMLLINT = yamllint_config.YamlLintConfig(
    "extends: default\n"
    "rules:\n"
    "  line-length: {max: 120}\n"
    "  document-start: disable\n"
    "  indentation: {indent-sequences: whatever}\n"
    "  comments: {min-spaces-from-content: 1}\n"
)
# Values passed through verbatim as Kubernetes objects: documented as one entry each.
OPAQUE_VALUES = {
    "resources",
    "podSecurityContext",
    "securityContext",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
}
# Kinds whose schemas kubernetes-validate does not ship (CRDs): checked structurally.
CRD_KINDS = {"ServiceMonitor"}
# Carries the dashboard's JSON verbatim (PromQL lines are long); checked as JSON below instead.
LONG_LINES_TEMPLATES = {"silex/templates/grafana-dashboard.yaml"}
YAMLLINT_LONG_LINES = yamllint_config.YamlLintConfig(
    "extends: default\n"
    "rules:\n"
    "  line-length: disable\n"
    "  document-start: disable\n"
    "  indentation: {indent-sequences: whatever}\n"
    "  comments: {min-spaces-from-content: 1}\n"
)
# The metrics of issue 6 the dashboard must show (operator and data plane).
DASHBOARD_METRICS = {
    "silex_requests_total",
    "silex_request_duration_seconds",
    "silex_upstream_duration_seconds",
    "silex_request_size_bytes",
    "silex_response_size_bytes",
    "silex_connections",
    "silex_tls_handshakes_total",
    "silex_upstream_connect_errors_total",
    "silex_upstream_retries_total",
    "silex_upstream_endpoint_healthy",
    "silex_config_generation",
    "silex_config_last_apply_timestamp_seconds",
    "silex_config_apply_duration_seconds",
    "silex_translate_problems",
    "silex_watch_events_total",
    "silex_watch_restarts_total",
    "silex_leader",
    "silex_ssl_certificate_expiry_timestamp_seconds",
}


def render(values: dict[str, Any]) -> dict[str, str]:
    chart = helm.Chart.load(str(CHART))
    return dict(chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True))


def objects(values: dict[str, Any]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path, text in sorted(render(values).items()):
        if not path.endswith(".yaml"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def only(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, [(d["kind"], d["metadata"]["name"]) for d in found]
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    workload = next(d for d in docs if d["kind"] in {"Deployment", "DaemonSet"})
    containers: list[dict[str, Any]] = workload["spec"]["template"]["spec"]["containers"]
    return containers[0]


@functools.cache
def controller_flags() -> frozenset[str]:
    silex = Path(sys.executable).with_name("silex")
    env = {**os.environ, "COLUMNS": "250", "TERM": "dumb", "NO_COLOR": "1"}
    result = subprocess.run(
        [str(silex), "controller", "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env=env,
    )
    # A boolean pair reads "--status-page  --no-status-page" at the start of one help line.
    flag = r"--[a-z0-9][a-z0-9-]*[a-z0-9]"
    pairs = re.findall(rf"^\W*({flag})\s+(?:({flag})\s)?", result.stdout, re.M)
    flags = frozenset(name for pair in pairs for name in pair if name)
    assert {"--publish-service", "--grace-period", "--election-id"} <= flags, result.stdout
    return flags


@pytest.mark.parametrize("variant", VARIANTS)
def test_lint_strict(variant: str) -> None:
    report = helm.lint(
        str(CHART),
        VARIANTS[variant],
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{KUBE_VERSION}",
    )
    assert report["errors"] == [], report
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_objects_validate(variant: str) -> None:
    docs = objects(VARIANTS[variant])
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("variant", VARIANTS)
def test_rendered_yaml_lints(variant: str) -> None:
    for path, text in render(VARIANTS[variant]).items():
        if not path.endswith(".yaml") or not text.strip():
            continue
        # As `helm template` prints it: the blank lines left by `{{- if }}` blocks trimmed.
        config = YAMLLINT_LONG_LINES if path in LONG_LINES_TEMPLATES else YAMLLINT
        problems = list(yamllint_linter.run(text.strip() + "\n", config))
        assert problems == [], (path, [str(p) for p in problems])


def test_chart_files_lint() -> None:
    for path in (CHART / "Chart.yaml", CHART / "values.yaml"):
        problems = list(yamllint_linter.run(path.read_text(), YAMLLINT))
        assert problems == [], (path, [str(p) for p in problems])


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_flag_is_a_controller_flag(variant: str) -> None:
    args = container(objects(VARIANTS[variant]))["args"]
    assert args[0] == "controller"
    for arg in args[1:]:
        flag = arg.split("=", 1)[0]
        assert flag in controller_flags(), f"{flag} is not a `silex controller` flag"


def test_default_render() -> None:
    docs = objects({})
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "IngressClass",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "Service",
            "ServiceAccount",
        ]
    )
    deployment = only(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    ctr = container(docs)
    args = ctr["args"]
    service = only(docs, "Service", "silex")
    assert f"--publish-service={NAMESPACE}/{service['metadata']['name']}" in args
    assert f"--election-namespace={NAMESPACE}" in args
    assert "--election-id=silex-leader" in args
    assert "--grace-period=30s" in args
    assert pod["terminationGracePeriodSeconds"] > 30
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in ctr["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    # Unprivileged container ports; the Service maps 80/443 onto them.
    ports = {p["name"]: p["containerPort"] for p in ctr["ports"]}
    assert ports == {"http": 8080, "https": 8443, "admin": 10254}
    assert {"--http-port=8080", "--https-port=8443", "--admin-port=10254"} <= set(args)
    assert service["spec"]["type"] == "LoadBalancer"
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", 80, "http"),
        ("https", 443, "https"),
    ]
    metrics = only(docs, "Service", "silex-metrics")
    assert metrics["spec"]["type"] == "ClusterIP"
    assert metrics["spec"]["ports"][0]["targetPort"] == "admin"
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert "lifecycle" not in ctr  # no preStop: silex drains on SIGTERM itself
    security = ctr["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert (
        pod["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
        == (deployment["spec"]["selector"]["matchLabels"])
    )
    assert ctr["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    ingress_class = only(docs, "IngressClass")
    assert ingress_class["spec"]["controller"] == "silex.dev/ingress-controller"
    assert "annotations" not in ingress_class["metadata"]


def queries(node: Any) -> list[str]:
    """Every PromQL expression of a dashboard: panel targets, and the selectors of its
    ``label_values(SELECTOR, LABEL)`` variables; Grafana's ``$__rate_interval`` made ``5m``."""
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        variable = node.get("query")
        if isinstance(variable, dict):
            selector = re.fullmatch(r"label_values\((.+),\s*\w+\)", variable["query"])
            assert selector, variable
            found.append(selector.group(1))
        found = [query.replace("$__rate_interval", "5m") for query in found]
        return found + [q for value in node.values() for q in queries(value)]
    if isinstance(node, list):
        return [q for value in node for q in queries(value)]
    return []


def metric_names(expr: Any) -> set[str]:
    """The metric names a parsed PromQL expression selects."""
    promql = pytest.importorskip("promql_parser")
    if isinstance(expr, promql.VectorSelector):
        return {expr.name}
    children = [
        getattr(expr, attribute)
        for attribute in ("lhs", "rhs", "expr", "vector_selector", "param")
        if getattr(expr, attribute, None) is not None
    ]
    children += list(getattr(expr, "args", None) or [])
    return {name for child in children for name in metric_names(child)}


def dashboard_metrics() -> set[str]:
    """Every metric the dashboard queries; each query must parse as PromQL."""
    promql = pytest.importorskip("promql_parser")
    dashboard = json.loads(DASHBOARD.read_text())
    found = queries(dashboard)
    assert len(found) > 20
    return {name for query in found for name in metric_names(promql.parse(query))}


def test_dashboard_queries_parse_and_show_every_metric_of_issue_6() -> None:
    # Histograms are queried through their _bucket/_sum series.
    families = {re.sub(r"_(bucket|sum|count)$", "", name) for name in dashboard_metrics()}
    assert sorted(DASHBOARD_METRICS - families) == []
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_grafana_dashboard_configmap() -> None:
    assert not [d for d in objects({}) if d["kind"] == "ConfigMap"]  # off by default
    config_map = only(objects(EVERYTHING), "ConfigMap", "edge-dashboard")
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Ingress"}
    assert json.loads(config_map["data"]["silex.json"]) == json.loads(DASHBOARD.read_text())
    default_namespace = only(objects({"grafanaDashboard": {"enabled": True}}), "ConfigMap")
    assert default_namespace["metadata"]["namespace"] == NAMESPACE


def test_dashboard_uses_only_documented_metrics() -> None:
    documented = set(re.findall(r"^\| `(silex_[a-z0-9_]+)`", METRICS_DOC.read_text(), re.M))
    # Histograms are queried through their _bucket/_sum series.
    undocumented = {
        name
        for name in dashboard_metrics()
        if name not in documented and re.sub(r"_(bucket|sum|count)$", "", name) not in documented
    }
    assert sorted(undocumented) == []


def test_rbac_is_least_privilege() -> None:
    docs = objects({})
    rules = {
        (group, resource): sorted(rule["verbs"])
        for rule in only(docs, "ClusterRole")["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    read = ["get", "list", "watch"]
    assert rules == {
        ("networking.k8s.io", "ingresses"): read,
        ("networking.k8s.io", "ingressclasses"): read,
        ("networking.k8s.io", "ingresses/status"): ["patch", "update"],
        ("", "services"): read,
        ("", "secrets"): read,
        ("discovery.k8s.io", "endpointslices"): read,
        ("events.k8s.io", "events"): ["create", "patch"],
        ("", "events"): ["create", "patch"],
    }
    role = only(docs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    binding = only(docs, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    sa = only(docs, "ServiceAccount")
    for bound in (binding, only(docs, "ClusterRoleBinding")):
        assert bound["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
        ]
    assert container(docs)  # the pod runs as that ServiceAccount:
    pod = only(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == sa["metadata"]["name"]


def test_daemonset_hostnetwork() -> None:
    docs = objects(DAEMONSET)
    assert not [d for d in docs if d["kind"] in {"Deployment", "PodDisruptionBudget"}]
    daemonset = only(docs, "DaemonSet")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "replicas" not in daemonset["spec"]
    ports = {p["name"]: p.get("hostPort") for p in container(docs)["ports"]}
    assert ports == {"http": 80, "https": 443, "admin": None}
    assert only(docs, "Service", "silex")["spec"]["type"] == "ClusterIP"


def test_everything_on() -> None:
    docs = objects(EVERYTHING)
    args = container(docs)["args"]
    assert "--publish-status-address=203.0.113.10" in args
    assert not [a for a in args if a.startswith("--publish-service")]
    assert [a for a in args if a.startswith("--watch-namespace")] == [
        "--watch-namespace=team-a",
        "--watch-namespace=team-b",
    ]
    for flag in (
        "--watch-ingress-without-class",
        "--default-ssl-certificate=certs/wildcard",
        "--workers=2",
        "--hsts",
        "--enable-h2c",
        "--upstream-send-timeout=30s",
        "--trusted-proxies=10.0.0.0/8",
        "--max-body-size=8m",
        "--log-level=debug",
        "--log-format=json",
        "--grace-period=60s",
        "--election-id=edge-leader",
    ):
        assert flag in args
    assert container(docs)["image"] == "registry.example/silex:1.2.3"
    deployment = only(docs, "Deployment")
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert only(docs, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] == "edge"
    annotations = only(docs, "IngressClass")["metadata"]["annotations"]
    assert annotations == {"ingressclass.kubernetes.io/is-default-class": "true"}
    # Secrets: no cluster-wide grant; a Role in every watched namespace and the default cert's.
    cluster_resources = {
        r for rule in only(docs, "ClusterRole")["rules"] for r in rule["resources"]
    }
    assert "secrets" not in cluster_resources
    secret_roles = sorted(
        d["metadata"]["namespace"]
        for d in docs
        if d["kind"] == "Role" and d["rules"][0]["resources"] == ["secrets"]
    )
    assert secret_roles == ["certs", "team-a", "team-b"]
    service = only(docs, "Service", "edge")
    assert [p["nodePort"] for p in service["spec"]["ports"]] == [30080, 30443]
    monitor = only(docs, "ServiceMonitor")
    metrics = only(docs, "Service", "edge-metrics")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    )
    assert (
        not monitor["spec"]["selector"]["matchLabels"].items()
        <= service["metadata"]["labels"].items()
    )


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"kind": "StatefulSet"}, "kind"),
        ({"replicaCount": -1}, "replicaCount"),
        ({"service": {"type": "External"}}, "type"),
        ({"ports": {"http": 70000}}, "http"),
        ({"controller": {"logLevel": "trace"}}, "logLevel"),
        ({"unknownKey": 1}, "unknownKey"),
        ({"controller": {"watchNamespace": ["a"]}}, "watchNamespace"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"terminationGracePeriodSeconds": 30}, "longer than controller.gracePeriodSeconds"),
        ({"rbac": {"namespacedSecrets": True}}, "needs controller.watchNamespaces"),
        ({"kind": "DaemonSet", "autoscaling": {"enabled": True}}, "Deployment only"),
    ],
)
def test_template_rejects_bad_combinations(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError, match=message):
        render(values)


def test_values_yaml_matches_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load((CHART / "values.yaml").read_text()), schema)


def test_readme_documents_every_value() -> None:
    def leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
        out: list[str] = []
        for key, value in tree.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and path not in OPAQUE_VALUES:
                out.extend(leaves(value, f"{path}."))
            else:
                out.append(path)
        return out

    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    missing = [v for v in leaves(values) if f"`{v}`" not in readme]
    assert missing == []
