"""The Helm chart in helm/cloudlink-gateway, checked offline.

It lints, and every case of helm/ci renders into manifests that Kubernetes's own schemas
accept (strict: no unknown field). The rendered objects keep the chart's promises:
restricted pods, secrets only by reference to existing Secrets, the probes on the
gateway's health paths, the shutdown timing, one replica on SQLite. The settings it
writes are the gateway's own (read back by ``Settings``), and its alerts use the metrics
the gateway exports and pass ``promtool``.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from gateway.settings import Settings
from observability.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
HELM = REPO / "helm"
CHART = HELM / "cloudlink-gateway"
ALERTS = CHART / "files" / "alerts.yaml"
ALERT_TESTS = HELM / "tests" / "alerts_test.yaml"
CI_VALUES = sorted((HELM / "ci").glob("*-values.yaml"))
RELEASE = "gw"
NAMESPACE = "gateway"
# The Prometheus Operator's kinds: kubernetes-validate ships the schemas of Kubernetes's
# own kinds only, so these two are checked by the assertions below instead.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The settings that are secrets: never in a ConfigMap, always from a secretKeyRef.
SECRET_SETTINGS = {
    name for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)
}
SECRET_ENV = {f"GATEWAY_{name.upper()}" for name in SECRET_SETTINGS | {"database_url"}}
# Settings the chart sets itself rather than from config: the data directory (SQLite's
# volume) and migrating at start (off while the migration Job runs).
CHART_OWNED_SETTINGS = {"data_dir", "migrate_on_start"}
# Not a GATEWAY_ setting: uvicorn's list of proxies trusted for X-Forwarded-For.
OTHER_ENV = {"FORWARDED_ALLOW_IPS"}
REQUIRE_PROMTOOL = "GATEWAY_TEST_REQUIRE_PROMTOOL"

Manifest = dict[str, Any]


# -- rendering ------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def merged(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in, map by map (as ``helm -f a -f b`` does)."""
    result = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


DEFAULT_VALUES: dict[str, Any] = load_yaml(HELM / "ci" / "default-values.yaml")
SQLITE_VALUES: dict[str, Any] = load_yaml(HELM / "ci" / "sqlite-values.yaml")


def render(chart: helm.Chart, values: dict[str, Any]) -> list[Manifest]:
    """The objects an install of ``values`` would create, hooks included."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[Manifest] = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def notes(chart: helm.Chart, values: dict[str, Any]) -> str:
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return next(text for path, text in manifests.items() if path.endswith("NOTES.txt"))


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Manifest], kind: str) -> Manifest:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def fails(chart: helm.Chart, values: dict[str, Any]) -> str:
    """The message of a render that must fail."""
    with pytest.raises(helm.HelmError) as caught:
        render(chart, values)
    return str(caught.value)


def kube_versions() -> list[str]:
    """The oldest Kubernetes the chart declares (Chart.yaml kubeVersion) and the newest
    kubernetes-validate knows."""
    declared = load_yaml(CHART / "Chart.yaml")["kubeVersion"]
    floor = re.match(r">=\s*v?(\d+\.\d+)", declared)
    assert floor is not None, declared
    return [floor.group(1), kubernetes_validate.latest_version()]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def rendered(chart: helm.Chart) -> dict[str, list[Manifest]]:
    """Every helm/ci case, rendered."""
    return {path.name: render(chart, load_yaml(path)) for path in CI_VALUES}


def test_ci_cases_cover_the_four_installs() -> None:
    names = {path.name for path in CI_VALUES}
    assert names >= {
        "default-values.yaml",
        "ha-monitoring-values.yaml",
        "sqlite-values.yaml",
        "ingress-values.yaml",
    }


# -- lint and Kubernetes's schemas ----------------------------------------------------


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda path: path.name)
def test_chart_lints_without_warnings(values_file: Path) -> None:
    report = helm.lint(
        CHART,
        load_yaml(values_file),
        strict=True,
        namespace=NAMESPACE,
        kube_version=f"v{kube_versions()[0]}.0",
    )
    # Severity 1 is information (such as "icon is recommended"); 2 and above fail.
    problems = [message for message in report["messages"] if message["severity"] >= 2]
    assert problems == []
    assert report["errors"] == []


def test_kubernetes_validate_is_strict() -> None:
    """The validation below refuses a field Kubernetes does not know: it is not a no-op."""
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    kubernetes_validate.validate(config_map, kube_versions()[-1], strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**config_map, "dta": {}}, kube_versions()[-1], strict=True)


@pytest.mark.parametrize("kube_version", kube_versions())
@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda path: path.name)
def test_every_ci_case_renders_objects_kubernetes_accepts(
    rendered: dict[str, list[Manifest]], values_file: Path, kube_version: str
) -> None:
    objects = rendered[values_file.name]
    assert objects
    for obj in objects:
        if obj["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']}: {exc.message} at {exc.path}")


def test_chart_app_version_is_the_package_version() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    chart_yaml = load_yaml(CHART / "Chart.yaml")
    assert chart_yaml["apiVersion"] == "v2"
    assert chart_yaml["appVersion"] == pyproject["project"]["version"]


def test_image_tag_defaults_to_the_app_version(rendered: dict[str, list[Manifest]]) -> None:
    deployment = one(rendered["default-values.yaml"], "Deployment")
    image = pod_spec(deployment)["containers"][0]["image"]
    assert image == f"cloudlink-gateway:{load_yaml(CHART / 'Chart.yaml')['appVersion']}"


# -- the pods -------------------------------------------------------------------------


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda path: path.name)
def test_every_pod_runs_restricted_as_10001_on_a_read_only_root(
    rendered: dict[str, list[Manifest]], values_file: Path
) -> None:
    workloads = [obj for obj in rendered[values_file.name] if obj["kind"] in {"Deployment", "Job"}]
    assert workloads
    for workload in workloads:
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True
        assert pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == 10001
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
        tmp_volumes = [v["name"] for v in spec["volumes"] if "emptyDir" in v]
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["runAsUser"] == 10001
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts["/tmp"] in tmp_volumes


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda path: path.name)
def test_no_pod_mounts_a_service_account_token(
    rendered: dict[str, list[Manifest]], values_file: Path
) -> None:
    objects = rendered[values_file.name]
    assert one(objects, "ServiceAccount")["automountServiceAccountToken"] is False
    for workload in of_kind(objects, "Deployment") + of_kind(objects, "Job"):
        assert pod_spec(workload)["automountServiceAccountToken"] is False


def test_probes_use_livez_and_readyz_with_time_for_a_first_migration(
    rendered: dict[str, list[Manifest]],
) -> None:
    container = pod_spec(one(rendered["default-values.yaml"], "Deployment"))["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    for probe, path in (
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/livez"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "http"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300


def test_resources_default_to_modest_requests_and_a_memory_limit(
    rendered: dict[str, list[Manifest]],
) -> None:
    container = pod_spec(one(rendered["default-values.yaml"], "Deployment"))["containers"][0]
    assert container["resources"] == {
        "requests": {"cpu": "100m", "memory": "256Mi"},
        "limits": {"memory": "512Mi"},
    }


@pytest.mark.parametrize(
    ("shutdown", "expected"),
    [
        ({}, 5 + 20 + 5),
        ({"drainSeconds": 10, "shutdownSeconds": 45}, 60),
        # Kubernetes takes whole seconds: a fraction is rounded up, never cut short.
        ({"drainSeconds": 2.5, "shutdownSeconds": 20}, 28),
        ({"drainSeconds": 0, "shutdownSeconds": 1}, 6),
        ({"terminationGracePeriodSeconds": 120}, 120),
    ],
    ids=["defaults", "longer", "fractional", "no-drain", "set-explicitly"],
)
def test_termination_grace_period_is_drain_plus_shutdown_plus_five(
    chart: helm.Chart, shutdown: dict[str, Any], expected: int
) -> None:
    objects = render(chart, merged(DEFAULT_VALUES, {"shutdown": shutdown}))
    assert pod_spec(one(objects, "Deployment"))["terminationGracePeriodSeconds"] == expected
    data = one(objects, "ConfigMap")["data"]
    drain = float(data["GATEWAY_DRAIN_SECONDS"])
    stop = float(data["GATEWAY_SHUTDOWN_SECONDS"])
    if "terminationGracePeriodSeconds" not in shutdown:
        assert expected == math.ceil(drain + stop + 5)


def test_replicas_spread_over_nodes_and_zones(rendered: dict[str, list[Manifest]]) -> None:
    deployment = one(rendered["default-values.yaml"], "Deployment")
    constraints = pod_spec(deployment)["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    }
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    for constraint in constraints:
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert constraint["labelSelector"]["matchLabels"].items() <= pod_labels.items()


def test_migration_pods_are_not_served_or_counted_as_replicas(
    rendered: dict[str, list[Manifest]],
) -> None:
    """The Service, the budget and the spread select the server's pods, not the Job's."""
    objects = rendered["ha-monitoring-values.yaml"]
    job_labels = one(objects, "Job")["spec"]["template"]["metadata"]["labels"]
    deployment = one(objects, "Deployment")
    server_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        one(objects, "Service")["spec"]["selector"],
        one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= server_labels.items()
        assert not selector.items() <= job_labels.items()


# -- settings and secrets -------------------------------------------------------------


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda path: path.name)
def test_no_secret_reaches_a_config_map_and_each_comes_from_a_secret_key_ref(
    rendered: dict[str, list[Manifest]], values_file: Path
) -> None:
    objects = rendered[values_file.name]
    assert of_kind(objects, "Secret") == []
    for config_map in of_kind(objects, "ConfigMap"):
        assert not set(config_map["data"]) & SECRET_ENV
        for value in config_map["data"].values():
            # Nothing shaped like a database URL with credentials, or a Fernet key.
            assert not re.search(r"://[^/\s]*:[^/\s]*@", value)
            assert not re.fullmatch(r"[A-Za-z0-9_-]{43}=", value)
    for workload in of_kind(objects, "Deployment") + of_kind(objects, "Job"):
        for container in pod_spec(workload)["containers"]:
            for name, entry in env_of(container).items():
                if name in SECRET_ENV:
                    assert "value" not in entry
                    assert set(entry["valueFrom"]) == {"secretKeyRef"}


def test_secrets_are_read_from_the_named_secrets_and_keys(
    rendered: dict[str, list[Manifest]],
) -> None:
    container = pod_spec(one(rendered["ha-monitoring-values.yaml"], "Deployment"))["containers"][0]
    refs = {
        name: entry["valueFrom"]["secretKeyRef"]
        for name, entry in env_of(container).items()
        if "valueFrom" in entry
    }
    assert refs == {
        "GATEWAY_DATABASE_URL": {"name": "gateway-db-app", "key": "uri"},
        "GATEWAY_SECRET_KEYS": {"name": "cloudlink-gateway", "key": "secret-keys"},
        "GATEWAY_ADMIN_TOKEN": {"name": "gateway-operator", "key": "token"},
        "GATEWAY_O365_CLIENT_SECRET": {"name": "cloudlink-gateway", "key": "o365-client-secret"},
    }


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({}, "secrets.existingSecret"),
        ({"secrets": {"existingSecret": "", "databaseUrl": {"name": "db"}}}, "secrets.secretKeys"),
        ({"secrets": {"existingSecret": "s", "adminToken": {"key": ""}}}, "secrets.adminToken.key"),
        ({"secrets": {"existingSecret": "s", "secretKeys": {"enabled": False}}}, "PostgreSQL"),
    ],
    ids=["no-secret-named", "keys-secret-unnamed", "token-key-empty", "postgresql-without-keys"],
)
def test_a_missing_secret_reference_fails_the_render_naming_the_value(
    chart: helm.Chart, overrides: dict[str, Any], named: str
) -> None:
    values = merged({"config": {"publicUrl": "https://gateway.example.com"}}, overrides)
    assert named in fails(chart, values)


def test_sqlite_needs_no_secret_at_all(chart: helm.Chart) -> None:
    """With its key file on the volume and no admin API, a SQLite install reads no Secret."""
    values = merged(
        SQLITE_VALUES,
        {"secrets": {"existingSecret": "", "adminToken": {"enabled": False}}},
    )
    deployment = one(render(chart, values), "Deployment")
    assert not set(env_of(pod_spec(deployment)["containers"][0])) & SECRET_ENV


def test_the_public_url_is_required(chart: helm.Chart) -> None:
    values = merged(DEFAULT_VALUES, {"config": {"publicUrl": ""}})
    assert "config.publicUrl is required" in fails(chart, values)


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda path: path.name)
def test_the_gateway_reads_the_rendered_settings(
    rendered: dict[str, list[Manifest]], values_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key of the ConfigMap is a setting the gateway has (no typo is silently
    ignored), and ``Settings`` accepts the values as written (integers as integers)."""
    objects = rendered[values_file.name]
    data: dict[str, str] = one(objects, "ConfigMap")["data"]
    container = pod_spec(one(objects, "Deployment"))["containers"][0]
    plain_env = {name: e["value"] for name, e in env_of(container).items() if "value" in e}
    known = {f"GATEWAY_{name.upper()}" for name in Settings.model_fields}
    assert set(data) - OTHER_ENV <= known
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    for name, value in {**data, **plain_env}.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.public_url == data["GATEWAY_PUBLIC_URL"]
    assert settings.keepalive_seconds == float(data["GATEWAY_KEEPALIVE_SECONDS"])


def test_config_defaults_are_the_gateways_defaults(rendered: dict[str, list[Manifest]]) -> None:
    """values.yaml repeats every non-secret setting with the gateway's default, so that
    the chart documents them all; a default changed in gateway/settings.py shows here."""
    data: dict[str, str] = one(rendered["default-values.yaml"], "ConfigMap")["data"]
    for name, field in Settings.model_fields.items():
        if name in SECRET_SETTINGS | CHART_OWNED_SETTINGS | {"database_url", "public_url"}:
            continue
        env = f"GATEWAY_{name.upper()}"
        default = field.get_default(call_default_factory=True)
        if default is None:
            assert env not in data or data[env] == "", env
            continue
        assert env in data, f"{env} ({field.description}) is missing from the chart"
        written = data[env]
        if isinstance(default, bool):
            assert written == str(default).lower(), env
        elif isinstance(default, int | float):
            assert float(written) == default, env
        else:
            assert written == str(default), env


def setting_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    """(setting name, its value's schema) for every setting values.yaml carries."""
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    for section in ("config", "server", "shutdown"):
        for key, prop in schema["properties"][section]["properties"].items():
            name = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower()
            if name in Settings.model_fields:
                yield name, prop


def test_the_schema_bounds_each_setting_as_the_gateway_does() -> None:
    """A value the schema lets through is one the gateway starts with: same type (an
    integer setting refuses 2.5), same bounds."""
    checked = set()
    for name, prop in setting_schemas():
        field = Settings.model_fields[name]
        expected_type = {int: "integer", float: "number", bool: "boolean"}.get(
            field.annotation  # type: ignore[arg-type]
        )
        if expected_type is not None:
            assert prop.get("type") == expected_type, name
        bounds = {}
        for constraint in field.metadata:
            for attribute, keyword in (
                ("ge", "minimum"),
                ("gt", "exclusiveMinimum"),
                ("le", "maximum"),
                ("lt", "exclusiveMaximum"),
            ):
                if getattr(constraint, attribute, None) is not None:
                    bounds[keyword] = getattr(constraint, attribute)
        keywords = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")
        assert {k: prop[k] for k in keywords if k in prop} == bounds, name
        checked.add(name)
    assert {"workers", "keepalive_seconds", "drain_seconds", "shutdown_seconds"} <= checked


def test_a_changed_setting_rolls_the_pods(chart: helm.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        deployment = one(render(chart, values), "Deployment")
        annotations: dict[str, str] = deployment["spec"]["template"]["metadata"]["annotations"]
        return annotations["checksum/config"]

    before = checksum(DEFAULT_VALUES)
    assert before == checksum(DEFAULT_VALUES)
    assert before != checksum(merged(DEFAULT_VALUES, {"config": {"logLevel": "DEBUG"}}))


def test_the_schema_refuses_keys_it_does_not_know(chart: helm.Chart) -> None:
    """A secret put among the settings (or a typo) is refused, not rendered."""
    values = merged(DEFAULT_VALUES, {"config": {"adminToken": "x" * 40}})
    assert "adminToken" in fails(chart, values)


# -- migration ------------------------------------------------------------------------


def test_a_hook_job_migrates_and_the_server_only_checks_the_schema(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["default-values.yaml"]
    job = one(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
    assert job["spec"]["backoffLimit"] <= 3
    spec = pod_spec(job)
    assert spec["restartPolicy"] == "Never"
    # The chart's ServiceAccount does not exist yet when a pre-install hook runs.
    assert "serviceAccountName" not in spec
    container = spec["containers"][0]
    assert container["command"] == ["cloudlink-gateway", "migrate"]
    env = env_of(container)
    assert env["GATEWAY_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "cloudlink-gateway",
        "key": "database-url",
    }
    # Nothing but the database URL is secret to it.
    assert {name for name in env if name in SECRET_ENV} == {"GATEWAY_DATABASE_URL"}
    # No ConfigMap exists yet on a first install: the same settings come as env.
    assert "envFrom" not in container
    settings_env = {name: e["value"] for name, e in env.items() if "value" in e}
    assert settings_env == one(objects, "ConfigMap")["data"]

    server = pod_spec(one(objects, "Deployment"))["containers"][0]
    assert server["command"][:2] == ["cloudlink-gateway", "serve"]
    assert env_of(server)["GATEWAY_MIGRATE_ON_START"]["value"] == "false"


def test_without_the_job_each_replica_migrates_at_start(chart: helm.Chart) -> None:
    objects = render(chart, merged(DEFAULT_VALUES, {"migration": {"enabled": False}}))
    assert of_kind(objects, "Job") == []
    server = pod_spec(one(objects, "Deployment"))["containers"][0]
    assert env_of(server)["GATEWAY_MIGRATE_ON_START"]["value"] == "true"


# -- replicas, disruption budget, SQLite ----------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "budget"),
    [
        ({"replicaCount": 1}, False),
        ({"replicaCount": 2}, True),
        ({"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 1}}, False),
        ({"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 2}}, True),
        ({"replicaCount": 3, "podDisruptionBudget": {"enabled": False}}, False),
    ],
    ids=["one", "two", "autoscaling-from-one", "autoscaling-from-two", "turned-off"],
)
def test_a_disruption_budget_exists_only_with_more_than_one_replica(
    chart: helm.Chart, overrides: dict[str, Any], budget: bool
) -> None:
    objects = render(chart, merged(DEFAULT_VALUES, overrides))
    budgets = of_kind(objects, "PodDisruptionBudget")
    assert len(budgets) == (1 if budget else 0)
    if budget:
        assert budgets[0]["spec"]["maxUnavailable"] == 1


def test_the_autoscaler_owns_the_replica_count(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["ha-monitoring-values.yaml"]
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["minReplicas"] == 3
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(objects, "Deployment")["metadata"]["name"]
    assert "replicas" not in one(objects, "Deployment")["spec"]


@pytest.mark.parametrize(
    "overrides",
    [
        {"replicaCount": 2},
        {"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 1}},
    ],
    ids=["two-replicas", "autoscaling"],
)
def test_the_schema_refuses_sqlite_with_more_than_one_replica(
    chart: helm.Chart, overrides: dict[str, Any]
) -> None:
    values = merged(SQLITE_VALUES, overrides)
    with pytest.raises(helm.HelmValuesError):
        chart.validate_schema(values)
    refused = fails(chart, values)
    assert "/replicaCount" in refused or "/autoscaling/enabled" in refused


def test_sqlite_runs_one_replica_on_a_kept_volume(rendered: dict[str, list[Manifest]]) -> None:
    objects = rendered["sqlite-values.yaml"]
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert of_kind(objects, "Job") == []
    assert of_kind(objects, "PodDisruptionBudget") == []
    claim = one(objects, "PersistentVolumeClaim")
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    spec = pod_spec(deployment)
    volume = next(v for v in spec["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    container = spec["containers"][0]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    data_dir = one(objects, "ConfigMap")["data"]["GATEWAY_DATA_DIR"]
    assert data_dir.startswith(mount["mountPath"] + "/")
    env = env_of(container)
    assert env["GATEWAY_MIGRATE_ON_START"]["value"] == "true"
    assert "GATEWAY_DATABASE_URL" not in env


def test_sqlite_on_an_existing_claim_creates_none(chart: helm.Chart) -> None:
    objects = render(chart, merged(SQLITE_VALUES, {"persistence": {"existingClaim": "mine"}}))
    assert of_kind(objects, "PersistentVolumeClaim") == []
    volumes = pod_spec(one(objects, "Deployment"))["volumes"]
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "mine"}} in volumes


# -- network --------------------------------------------------------------------------


def test_the_service_serves_http_on_8080(rendered: dict[str, list[Manifest]]) -> None:
    service = one(rendered["default-values.yaml"], "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}
    ]


def test_the_ingress_exposes_callers_paths_and_gives_the_public_url(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["ingress-values.yaml"]
    ingress = one(objects, "Ingress")
    paths = {p["path"] for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]}
    assert paths == {"/scim", "/webhooks", "/oauth", "/api"}
    assert ingress["spec"]["tls"][0]["hosts"] == ["gateway.example.com"]
    data = one(objects, "ConfigMap")["data"]
    assert data["GATEWAY_PUBLIC_URL"] == "https://gateway.example.com"
    assert data["FORWARDED_ALLOW_IPS"] == "*"


def test_the_network_policy_admits_8080_and_lets_out_dns_https_and_postgresql(
    rendered: dict[str, list[Manifest]],
) -> None:
    policy = one(rendered["ha-monitoring-values.yaml"], "NetworkPolicy")
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = spec["ingress"]
    assert ingress["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}
    } in (ingress["from"])
    ports = {(p["port"], p["protocol"]) for rule in spec["egress"] for p in rule["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (443, "TCP"), (5432, "TCP")}
    postgresql = next(r for r in spec["egress"] if r["ports"][0]["port"] == 5432)
    assert postgresql["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]


# -- monitoring -----------------------------------------------------------------------


def test_the_service_monitor_scrapes_metrics_from_the_service(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["ha-monitoring-values.yaml"]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    service_labels = one(objects, "Service")["metadata"]["labels"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service_labels.items()
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_the_prometheus_rule_is_the_alerts_file_with_absolute_runbook_links(
    rendered: dict[str, list[Manifest]],
) -> None:
    rule = one(rendered["ha-monitoring-values.yaml"], "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    base = "https://git.example.com/cloudlink/cloudlink-gateway/blob/v0.1.0/"
    expected = load_yaml(ALERTS)
    for group in expected["groups"]:
        for alert in group["rules"]:
            alert["annotations"]["runbook_url"] = base + alert["annotations"]["runbook_url"]
    assert rule["spec"] == expected


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in load_yaml(ALERTS)["groups"] for rule in group["rules"]]


def test_each_alert_says_how_bad_what_and_what_to_do() -> None:
    rules = alert_rules()
    assert len(rules) >= 6
    for rule in rules:
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
        annotations = rule["annotations"]
        assert annotations["summary"]
        assert len(annotations["description"]) > 100
        assert re.fullmatch(r"docs/operations\.md#[a-z0-9-]+", annotations["runbook_url"])


def exported_metrics() -> dict[str, set[str]]:
    """Every series name the gateway exports, with its label names."""
    names: dict[str, set[str]] = {}
    for instrument in vars(Metrics()).values():
        if not isinstance(instrument, MetricWrapperBase):
            continue
        labels = set(instrument._labelnames)
        for family in instrument.describe():
            suffixes = {
                "counter": ["_total"],
                "histogram": ["_bucket", "_sum", "_count"],
            }.get(family.type, [""])
            for suffix in suffixes:
                names[family.name + suffix] = labels | ({"le"} if suffix == "_bucket" else set())
    return names


def test_alerts_use_metrics_and_labels_the_gateway_exports() -> None:
    exported = exported_metrics()
    assert "cloudlink_gateway_outbox_deliveries_total" in exported
    scrape_labels = {"namespace", "job"}
    metric_labels: set[str] = set()
    for labels in exported.values():
        metric_labels |= labels
    for rule in alert_rules():
        expr = rule["expr"]
        for name, matchers in re.findall(r"(cloudlink_gateway_\w+)(?:\{([^}]*)\})?", expr):
            assert name in exported, f"{rule['alert']}: {name} is not exported"
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", matchers))
            assert used <= exported[name], f"{rule['alert']}: {name} has no {used}"
        for grouping in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            labels = {label.strip() for label in grouping.split(",") if label.strip()}
            # namespace and job come from the scrape, the rest from the metrics.
            assert labels <= scrape_labels | metric_labels, f"{rule['alert']}: {labels}"


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get(REQUIRE_PROMTOOL):
            pytest.fail(
                f"{REQUIRE_PROMTOOL} is set but promtool is not installed "
                "(Debian: apt-get install prometheus)"
            )
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    return found


def run_promtool(*args: str) -> None:
    result = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, check=False, cwd=HELM
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_alert_rules() -> None:
    run_promtool("check", "rules", str(ALERTS))


def test_promtool_alert_tests_pass() -> None:
    """Each alert fires on its failure and stays quiet otherwise (helm/tests/alerts_test.yaml)."""
    tested = load_yaml(ALERT_TESTS)["tests"]
    cases = [case for test in tested for case in test["alert_rule_test"]]
    for rule in alert_rules():
        own = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in own), f"{rule['alert']} never fires"
        assert any(not case["exp_alerts"] for case in own), f"{rule['alert']} never stays quiet"
    run_promtool("test", "rules", str(ALERT_TESTS))


# -- files around the templates -------------------------------------------------------


def test_values_files_pass_yamllint() -> None:
    files = [
        CHART / "Chart.yaml",
        CHART / "values.yaml",
        ALERTS,
        ALERT_TESTS,
        *CI_VALUES,
    ]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "--strict",
            "-c",
            str(HELM / ".yamllint"),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# Kubernetes's own objects, passed through whole: documented as one value each.
WHOLE_VALUES = {"podSecurityContext", "securityContext", "resources"}


def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value and path not in WHOLE_VALUES:
            yield from leaf_paths(value, path + ".")
        else:
            yield path


def test_the_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    missing = [
        path for path in leaf_paths(load_yaml(CHART / "values.yaml")) if f"`{path}`" not in readme
    ]
    assert missing == []


def test_notes_say_where_secrets_come_from_and_how_to_check_readiness(chart: helm.Chart) -> None:
    text = notes(chart, DEFAULT_VALUES)
    assert "GATEWAY_DATABASE_URL   Secret cloudlink-gateway, key database-url" in text
    assert "/readyz" in text
    assert "port-forward svc/gw-cloudlink-gateway" in text
