"""Tests of deploying: manifests into a namespace, rollout judgements, the front door.

The judgements (is a rollout complete, will a pod never be Ready, which
endpoints are ready) run on objects recorded from a real cluster under
``tests/data/deploying/``. The tests marked ``cluster`` run against the
embedded cluster ``local`` when it is up, each in a namespace of its own.
"""

import json
import secrets
import socket
import threading
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest

from harness import clusters, deploying
from harness.deploying import DeployError, Manifest, Shop
from harness.errors import UsageError
from tests.services.service_processes import ServiceStarter

DATA = Path(__file__).parent / "data" / "deploying"


def _load(name: str) -> Any:
    return json.loads((DATA / name).read_text())


def _write(folder: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder


CONFIG_MAP = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n"


def test_manifests_come_in_the_order_the_kustomization_lists_their_files(
    tmp_path: Path,
) -> None:
    folder = _write(
        tmp_path,
        {
            "Kustomization": "resources:\n  - second.yaml\n  - first.yaml\n",
            "first.yaml": CONFIG_MAP.format(name="a") + "---\n",
            "second.yaml": CONFIG_MAP.format(name="b")
            + "---\n"
            + CONFIG_MAP.format(name="c"),
        },
    )

    manifests = deploying.read_manifests(folder)

    assert [m["metadata"]["name"] for m in manifests] == ["b", "c", "a"]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        pytest.param(
            {"Kustomization": "resources: []\n"},
            "*Kustomization lists no resources*",
            id="no-resources",
        ),
        pytest.param(
            {"Kustomization": "resources: [gone.yaml]\n"},
            "manifest */gone.yaml cannot be read*",
            id="missing-file",
        ),
        pytest.param(
            {
                "Kustomization": "resources: [one.yaml]\n",
                "one.yaml": CONFIG_MAP.format(name="a")
                + "---\napiVersion: v1\nkind: Service\n",
            },
            "*/one.yaml document 2 lacks apiVersion, kind or metadata.name*",
            id="nameless-object",
        ),
        pytest.param(
            {"Kustomization": "resources: [one.yaml]\n", "one.yaml": "- a\n- b\n"},
            "*/one.yaml document 1 is not a mapping*",
            id="not-a-mapping",
        ),
    ],
)
def test_a_broken_manifest_folder_is_a_usage_error_naming_the_place(
    tmp_path: Path, files: dict[str, str], message: str
) -> None:
    folder = _write(tmp_path, files)

    with pytest.raises(UsageError) as raised:
        deploying.read_manifests(folder)

    assert raised.match(message.replace("*", ".*"))


def test_objects_are_placed_in_the_namespace_without_changing_the_originals() -> None:
    manifests = deploying.read_manifests()

    placed = deploying.in_namespace(manifests, namespace="harness-test")

    assert {m["metadata"]["namespace"] for m in placed} == {"harness-test"}
    assert all("namespace" not in m["metadata"] for m in manifests)
    assert [m["metadata"]["name"] for m in placed] == [
        m["metadata"]["name"] for m in manifests
    ]


def test_an_object_of_another_namespace_is_refused() -> None:
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "a", "namespace": "elsewhere"},
    }

    with pytest.raises(UsageError, match="names namespace elsewhere"):
        deploying.in_namespace([manifest], namespace="harness-test")


def test_the_images_of_the_shop_are_the_ones_the_harness_builds() -> None:
    references = deploying.images_of(deploying.read_manifests())

    assert clusters.image_names(references) == [
        "apache",
        "catalog",
        "customer",
        "order",
    ]
    assert all(r.endswith(":0.1.0") for r in references)


def test_the_front_door_port_is_the_node_port_of_its_service() -> None:
    manifests = deploying.read_manifests()

    assert deploying.node_port(manifests, service="apache") == 30080
    with pytest.raises(UsageError, match="no Service catalog with a nodePort"):
        deploying.node_port(manifests, service="catalog")


# Judgements on objects recorded from a cluster.


@pytest.mark.parametrize(
    ("name", "complete"),
    [
        pytest.param("deployment-progressing.json", False, id="new-pods-not-ready"),
        pytest.param("deployment-complete.json", True, id="all-available"),
        pytest.param("deployment-scaled-up.json", False, id="scaled-up-not-observed"),
        pytest.param("deployment-scaled-down.json", False, id="scaled-down-not-done"),
        pytest.param("deployment-stuck.json", False, id="image-never-pulled"),
    ],
)
def test_a_rollout_is_complete_only_when_every_wanted_pod_is_updated_and_available(
    name: str, complete: bool
) -> None:
    assert deploying.rollout_complete(_load(name)) is complete


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        pytest.param(
            "pod-never-pull.json",
            "pod * container catalog is in ErrImageNeverPull*",
            id="image-missing",
        ),
        pytest.param(
            "pod-crash-loop.json",
            "pod * container catalog is in CrashLoopBackOff*",
            id="crashing",
        ),
        pytest.param("pod-starting.json", None, id="starting"),
        pytest.param("pod-ready.json", None, id="ready"),
    ],
)
def test_a_pod_that_will_never_be_ready_is_told_apart_from_one_that_starts(
    name: str, problem: str | None
) -> None:
    found = deploying.pod_problem(_load(name))

    if problem is None:
        assert found is None
    else:
        assert found is not None
        assert fnmatch(found.message, problem), found
        assert not found.passing


def test_only_ready_pods_of_the_endpoint_slices_count_as_endpoints() -> None:
    slices = _load("endpoint-slices-scaling-down.json")
    terminating = {
        endpoint["targetRef"]["name"]
        for endpoint_slice in slices
        for endpoint in endpoint_slice["endpoints"]
        if endpoint["conditions"].get("terminating")
    }

    ready = deploying.ready_endpoints(slices)

    assert terminating
    assert ready
    assert not ready & terminating


def test_an_event_reads_as_one_line_naming_its_object_and_reason() -> None:
    events = _load("events-never-pull.json")

    lines = [deploying.describe_event(event) for event in events]

    failed = [line for line in lines if " Warning ErrImageNeverPull: " in line]
    assert failed
    assert all(line.startswith("pod/") and "\n" not in line for line in failed)


# The front door, on a catalog process on loopback.


def test_a_request_returns_the_status_body_and_serving_pod(
    service_starter: ServiceStarter,
) -> None:
    catalog = service_starter.start("catalog")

    found = deploying.request(f"{catalog.base_url}/catalog/1")
    missing = deploying.request(f"{catalog.base_url}/catalog/999")

    assert found.status == 200
    assert found.json()["id"] == 1
    assert found.served_by == f"catalog-{catalog.port}"
    assert missing.status == 404


def test_waiting_until_served_counts_the_answers_of_each_pod(
    service_starter: ServiceStarter,
) -> None:
    catalog = service_starter.start("catalog")
    pod = f"catalog-{catalog.port}"

    seen = deploying.wait_until_served(f"{catalog.base_url}/catalog/1", pods=[pod])

    assert seen == {pod: 1}


def test_waiting_for_a_pod_that_never_answers_fails_naming_it(
    service_starter: ServiceStarter,
) -> None:
    catalog = service_starter.start("catalog")

    with pytest.raises(DeployError, match="not answered by catalog-ghost after 20 "):
        deploying.wait_until_served(
            f"{catalog.base_url}/catalog/1",
            pods=[f"catalog-{catalog.port}", "catalog-ghost"],
            max_requests=20,
        )


def test_a_request_leaves_from_the_probe_block_below_the_ephemeral_ports() -> None:
    peers: list[int] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(4)

        def answer_twice() -> None:
            for _ in range(2):
                connection, peer = server.accept()
                with connection:
                    peers.append(peer[1])
                    connection.recv(4096)
                    connection.sendall(b"HTTP/1.0 204 No Content\r\n\r\n")

        thread = threading.Thread(target=answer_twice, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/health/ready"
        answers = [deploying.request(url, timeout=5.0) for _ in range(2)]
        thread.join(timeout=5.0)

    low, high = map(
        int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    )
    assert [a.status for a in answers] == [204, 204]
    assert len(peers) == 2
    assert all(port in deploying.PROBE_PORTS for port in peers)
    assert not any(low <= port <= high for port in peers)


# On the embedded cluster.


@pytest.fixture
def shop() -> Iterator[Shop]:
    from harness.cluster import local
    from harness.cluster.settings import ClusterSettings

    settings = ClusterSettings()
    if not local.status(settings).healthy:
        pytest.skip("cluster local is not up: `harness cluster up` to run these")
    target = clusters.Target(
        kind="local", kubeconfig=settings.layout.admin_kubeconfig, started=False
    )
    api = clusters.api_client(target)
    namespace = f"harness-test-{secrets.token_hex(3)}"
    shop = Shop(api, namespace=namespace)
    shop.create_namespace()
    try:
        yield shop
    finally:
        shop.delete_namespace()
        api.close()  # type: ignore[no-untyped-call]


def _deployment(name: str, *, image: str, command: list[str] | None) -> Manifest:
    container: dict[str, Any] = {
        "name": "catalog",
        "image": image,
        "imagePullPolicy": "Never",
        "env": [{"name": "POD_NAME", "value": name}],
    }
    if command is not None:
        container["command"] = command
    labels = {deploying.NAME_LABEL: name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container]},
            },
        },
    }


CATALOG_IMAGE = "localhost/kube-harness/catalog:0.1.0"


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("image", "command", "reason"),
    [
        pytest.param(
            "localhost/kube-harness/absent:0.0.0",
            None,
            "ErrImageNeverPull",
            id="image-missing",
        ),
        pytest.param(
            CATALOG_IMAGE,
            ["/bin/sh", "-c", "exit 3"],
            "CrashLoopBackOff",
            id="crashing",
        ),
    ],
)
def test_a_rollout_that_cannot_finish_fails_at_once_quoting_the_pod_events(
    shop: Shop, image: str, command: list[str] | None, reason: str
) -> None:
    shop.apply([_deployment("broken", image=image, command=command)])

    with pytest.raises(DeployError) as raised:
        shop.wait_for_rollouts(["broken"], timeout=120.0)

    first, *events = str(raised.value).splitlines()
    # The watch saw the pod give up: the message is not the timeout's.
    assert "did not roll out within" not in first
    assert f"is in {reason}" in first
    assert "deployment broken in " in first
    assert any(line.strip().startswith("pod/broken-") for line in events)


@pytest.mark.cluster
def test_scaling_waits_until_the_endpoints_are_exactly_the_serving_pods(
    shop: Shop,
) -> None:
    deployment = _deployment("catalog", image=CATALOG_IMAGE, command=None)
    service: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "catalog"},
        "spec": {
            "selector": {deploying.NAME_LABEL: "catalog"},
            "ports": [{"port": 8080, "targetPort": 8080}],
        },
    }
    shop.apply([deployment, service])
    shop.wait_for_rollouts(["catalog"])

    up = shop.scale(name="catalog", replicas=3)
    down = shop.scale(name="catalog", replicas=2)

    assert len(up) == 3
    assert len(down) == 2
    assert set(down) < set(up)
    assert [deploying.name_of(p) for p in shop.pods("catalog")] == down
