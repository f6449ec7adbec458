"""The manifests in k8s/ are valid Kubernetes 1.34 objects that fit together.

Schema validation catches a misspelt field; the checks after it catch what a
schema cannot: a Service that selects no pods, a probe on a port that is not
declared, an image tag that drifted from the project's version, a setting in
the ConfigMap that nothing reads.
"""

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import kubernetes_validate.utils
import pytest
import yaml

import harness
from harness.paths import PROJECT_ROOT
from services.kit.settings import Settings, SettingsError

K8S_DIR = PROJECT_ROOT / "k8s"
ENTRYPOINT = PROJECT_ROOT / "services" / "apache" / "entrypoint.sh"
CLUSTER_VERSION = (1, 34)
SETTINGS_NAME = "kube-harness-settings"
# A value no setting of any component accepts.
INVALID = "%not valid%"
KUBECTL_ENDINGS = (".json", ".yaml", ".yml")

Manifest = dict[str, Any]


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def _schema_version() -> str:
    """Return the newest schema version bundled that is not newer than 1.34."""
    versions = kubernetes_validate.utils.all_versions()
    return max(
        (v for v in versions if _minor(v) <= CLUSTER_VERSION), key=_minor, default=""
    )


def _manifest_files() -> list[Path]:
    """Return the files ``kubectl apply -f k8s/`` reads: those it knows by ending."""
    return sorted(p for p in K8S_DIR.iterdir() if p.suffix in KUBECTL_ENDINGS)


def _documents() -> list[tuple[str, Manifest]]:
    found = []
    for path in _manifest_files():
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                found.append((path.name, doc))
    return found


DOCUMENTS = _documents()


def _of_kind(kind: str) -> list[Manifest]:
    return [doc for _, doc in DOCUMENTS if doc["kind"] == kind]


def _params(kind: str) -> list[Any]:
    return [pytest.param(doc, id=doc["metadata"]["name"]) for doc in _of_kind(kind)]


def _containers(deployment: Manifest) -> list[Manifest]:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    return containers


def _probes(container: Manifest) -> Iterator[tuple[str, Manifest]]:
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        if kind in container:
            yield kind, container[kind]


def _settings() -> dict[str, str]:
    (config_map,) = [
        doc for doc in _of_kind("ConfigMap") if doc["metadata"]["name"] == SETTINGS_NAME
    ]
    data: dict[str, str] = config_map["data"]
    return data


def _rejection_by_the_services(env: dict[str, str]) -> str | None:
    """Return why the services refuse ``env``, or None if they take it."""
    try:
        Settings.from_environ({**env, "POD_NAME": "catalog-0"})
    except SettingsError as e:
        return str(e)
    return None


def _run_entrypoint(
    env: dict[str, str], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """Run Apache's entry script with ``env``, as a configuration test only."""
    return subprocess.run(
        [str(ENTRYPOINT), "-t"],
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "TMPDIR": str(tmp_path),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_a_schema_not_newer_than_the_cluster_is_bundled() -> None:
    assert _schema_version(), "kubernetes-validate bundles no schema up to 1.34"


def test_the_manifests_hold_a_deployment_and_a_service_per_component() -> None:
    components = {"catalog", "customer", "order", "apache"}
    assert {d["metadata"]["name"] for d in _of_kind("Deployment")} == components
    assert {s["metadata"]["name"] for s in _of_kind("Service")} == components


def test_apply_of_the_folder_reads_kubernetes_objects_only() -> None:
    # kubectl apply -f k8s/ reads every .yaml, .yml and .json file; a
    # Kustomization among them would be an object no API server knows.
    kinds = {doc["kind"] for _, doc in DOCUMENTS}
    assert kinds == {"ConfigMap", "Deployment", "Service"}
    assert not [p for p in K8S_DIR.iterdir() if p.name.startswith("kustomization.")]


@pytest.mark.parametrize(
    "document",
    [
        pytest.param(doc, id=f"{name}:{doc['kind']}/{doc['metadata']['name']}")
        for name, doc in DOCUMENTS
    ],
)
def test_every_document_validates_against_the_strict_schema(document: Manifest) -> None:
    try:
        kubernetes_validate.validate(document, _schema_version(), strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(part) for part in e.path)
        pytest.fail(f"{where}: {e.message}")


def test_the_kustomization_lists_every_manifest_and_nothing_else() -> None:
    kustomization = yaml.safe_load(
        (K8S_DIR / "Kustomization").read_text(encoding="utf-8")
    )
    listed = kustomization["resources"]
    assert sorted(listed) == [p.name for p in _manifest_files()]
    assert len(listed) == len(set(listed))


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_deployment_selects_the_pods_of_its_own_template(
    deployment: Manifest,
) -> None:
    spec = deployment["spec"]
    selector = spec["selector"]
    template_labels = spec["template"]["metadata"]["labels"]

    assert set(selector) == {"matchLabels"}
    assert selector["matchLabels"].items() <= template_labels.items()
    assert selector["matchLabels"] == {
        "app.kubernetes.io/name": deployment["metadata"]["name"]
    }


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_every_object_of_a_component_carries_the_project_labels(
    deployment: Manifest,
) -> None:
    name = deployment["metadata"]["name"]
    expected = {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/part-of": "kube-harness",
        "app.kubernetes.io/version": harness.__version__,
    }
    (service,) = [s for s in _of_kind("Service") if s["metadata"]["name"] == name]
    for labels in (
        deployment["metadata"]["labels"],
        deployment["spec"]["template"]["metadata"]["labels"],
        service["metadata"]["labels"],
    ):
        assert labels == expected


@pytest.mark.parametrize("service", _params("Service"))
def test_a_service_selects_exactly_one_deployments_pods(service: Manifest) -> None:
    selector = service["spec"]["selector"]
    matching = [
        d["metadata"]["name"]
        for d in _of_kind("Deployment")
        if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]
    assert matching == [service["metadata"]["name"]]


@pytest.mark.parametrize("service", _params("Service"))
def test_a_service_targets_a_port_its_pods_declare(service: Manifest) -> None:
    (deployment,) = [
        d
        for d in _of_kind("Deployment")
        if d["metadata"]["name"] == service["metadata"]["name"]
    ]
    declared = [port for c in _containers(deployment) for port in c.get("ports", [])]

    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        key = "name" if isinstance(target, str) else "containerPort"
        assert [p for p in declared if p.get(key) == target], (
            f"{target!r} is not a port of {service['metadata']['name']}'s pods"
        )
        assert port["port"] == 8080
        assert port["name"] == "http"


def test_the_backends_are_cluster_internal_and_apache_is_on_node_port_30080() -> None:
    types = {s["metadata"]["name"]: s["spec"]["type"] for s in _of_kind("Service")}
    assert types == {
        "catalog": "ClusterIP",
        "customer": "ClusterIP",
        "order": "ClusterIP",
        "apache": "NodePort",
    }
    (apache,) = [s for s in _of_kind("Service") if s["metadata"]["name"] == "apache"]
    assert [p["nodePort"] for p in apache["spec"]["ports"]] == [30080]


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_container_runs_the_image_of_its_component_at_the_project_version(
    deployment: Manifest,
) -> None:
    name = deployment["metadata"]["name"]
    (container,) = _containers(deployment)
    assert container["name"] == name
    assert container["image"] == f"localhost/kube-harness/{name}:{harness.__version__}"
    assert container["imagePullPolicy"] == "IfNotPresent"


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_probes_use_a_declared_port_and_the_health_paths(deployment: Manifest) -> None:
    (container,) = _containers(deployment)
    port_names = {p["name"] for p in container["ports"]}
    paths = {}
    for kind, probe in _probes(container):
        assert probe["httpGet"]["port"] in port_names, f"{kind} port is not declared"
        assert probe["timeoutSeconds"] >= 1
        paths[kind] = probe["httpGet"]["path"]
    assert paths == {
        "startupProbe": "/health/live",
        "readinessProbe": "/health/ready",
        "livenessProbe": "/health/live",
    }


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_new_pod_is_probed_every_second_until_ready(deployment: Manifest) -> None:
    (container,) = _containers(deployment)
    startup = container["startupProbe"]
    readiness = container["readinessProbe"]
    assert startup["periodSeconds"] == 1
    # At least 20 s for a slow start on a busy node before the kubelet restarts it.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 20
    assert readiness["periodSeconds"] <= 2
    assert readiness.get("initialDelaySeconds", 0) == 0


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_container_listens_where_its_port_is_declared(deployment: Manifest) -> None:
    (container,) = _containers(deployment)
    env = {e["name"]: e for e in container["env"]}
    (http,) = [p for p in container["ports"] if p["name"] == "http"]
    assert env["PORT"]["value"] == str(http["containerPort"])
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_container_takes_its_settings_from_a_config_map_that_exists(
    deployment: Manifest,
) -> None:
    config_maps = {
        c["metadata"]["name"]: c.get("data", {}) for c in _of_kind("ConfigMap")
    }
    (container,) = _containers(deployment)

    refs = [source["configMapRef"]["name"] for source in container["envFrom"]]
    assert refs == [SETTINGS_NAME]
    assert all(ref in config_maps for ref in refs)
    for entry in container["env"]:
        key_ref = entry.get("valueFrom", {}).get("configMapKeyRef")
        if key_ref:
            assert key_ref["key"] in config_maps[key_ref["name"]]


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_pod_outlives_its_pre_stop_pause_and_graceful_shutdown(
    deployment: Manifest,
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = _containers(deployment)
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    graceful = float(_settings()["GRACEFUL_TIMEOUT_SECONDS"])
    drain = float(_settings()["DRAIN_SECONDS"])

    # The pause outlasts kube-proxy's 1 s minimum sync period.
    assert pause >= 2
    assert pod["terminationGracePeriodSeconds"] > pause + drain + graceful


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_rollout_surges_one_pod_and_never_drops_one(deployment: Manifest) -> None:
    strategy = deployment["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_pod_runs_restricted_with_only_tmp_writable(deployment: Manifest) -> None:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = _containers(deployment)
    context = {**pod["securityContext"], **container["securityContext"]}

    assert pod["automountServiceAccountToken"] is False
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == 10001
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert list(mounts) == ["/tmp"]
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("deployment", _params("Deployment"))
def test_a_container_requests_resources_and_has_a_memory_limit(
    deployment: Manifest,
) -> None:
    (container,) = _containers(deployment)
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert "memory" in resources["limits"]


def test_the_replicas_start_with_two_catalogs_and_one_of_the_rest() -> None:
    replicas = {
        d["metadata"]["name"]: d["spec"]["replicas"] for d in _of_kind("Deployment")
    }
    assert replicas == {"catalog": 2, "customer": 1, "order": 1, "apache": 1}


def test_the_services_accept_every_shared_setting() -> None:
    settings = Settings.from_environ({**_settings(), "POD_NAME": "catalog-0"})
    assert settings.upstream_timeout_seconds == float(
        _settings()["UPSTREAM_TIMEOUT_SECONDS"]
    )


@pytest.mark.skipif(
    not shutil.which("apache2", path="/usr/sbin:/usr/bin"),
    reason="needs Debian's apache2 (make system)",
)
def test_apache_accepts_every_shared_setting(tmp_path: Path) -> None:
    result = _run_entrypoint(_settings(), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Syntax OK" in result.stderr


def test_apache_waits_longer_for_an_order_than_the_order_waits_upstream() -> None:
    settings = _settings()
    # An order asks catalog, then customer, each for up to the upstream timeout.
    assert float(settings["PROXY_TIMEOUT_SECONDS"]) > 2 * float(
        settings["UPSTREAM_TIMEOUT_SECONDS"]
    )


@pytest.mark.parametrize("key", [pytest.param(k, id=k) for k in sorted(_settings())])
def test_every_shared_setting_is_read_by_a_service_or_by_apache(
    key: str, tmp_path: Path
) -> None:
    env = {**_settings(), key: INVALID}

    message = _rejection_by_the_services(env)
    if message is None:
        result = _run_entrypoint(env, tmp_path)
        assert result.returncode != 0, f"neither the services nor apache read {key}"
        message = result.stderr
    assert f"{key}='{INVALID}'" in message
