"""Choosing the cluster a run uses, and putting the images where it finds them.

``--cluster local`` is the embedded cluster of ``harness.cluster``: reused
when it is up, brought up (and later down) by the run otherwise.
``--cluster existing`` is whatever a kubeconfig points at; the harness never
stops it. ``kind``, ``k3d`` and ``minikube`` go through ``pytest-kubernetes``
and need their tool and Docker; this front only starts and stops them.

Every way ends in a ``Target``: the kubeconfig to use, the address the
front door's NodePort answers on, and whether this run started the cluster.
"""

import logging
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

from harness.errors import HarnessError, PrerequisiteError, UsageError
from harness.progress import Progress

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

logger = logging.getLogger(__name__)

Kind = Literal["local", "kind", "k3d", "minikube", "existing"]
PROVIDERS = ("kind", "k3d", "minikube")

#: Seconds the first API call may take before the cluster counts as absent.
PROBE_TIMEOUT_S = 10.0


class ClusterError(HarnessError):
    """The cluster cannot be reached, started or used."""


@dataclass(frozen=True)
class Target:
    """The cluster one run uses."""

    kind: Kind
    kubeconfig: Path
    #: The run started the cluster, so it may stop it at the end.
    started: bool
    #: The address of the node the front door's NodePort is reached on; None
    #: when it must be read from the nodes.
    node_address: str | None = None
    #: The provider's cluster name (kind, k3d, minikube).
    name: str | None = None


def open_cluster(
    kind: Kind,
    *,
    kubeconfig: Path | None = None,
    name: str = "kube-harness",
    progress: Progress | None = None,
) -> Target:
    """Reach the cluster of ``kind``, starting it when the kind allows."""
    if kind == "local":
        return _open_local(progress=progress)
    if kind == "existing":
        if kubeconfig is None:
            raise UsageError("--cluster existing needs --kubeconfig PATH")
        return Target(kind="existing", kubeconfig=kubeconfig, started=False)
    if kind in PROVIDERS:
        return _open_provider(kind, name=name)
    raise UsageError(f"cluster kind {kind!r} is not one of local, existing, kind, k3d")


def _open_local(*, progress: Progress | None) -> Target:
    from harness.cluster import local
    from harness.cluster.settings import ClusterSettings

    settings = ClusterSettings()
    current = local.status(settings)
    started = False
    if current.healthy:
        logger.info("cluster local is up; reusing it")
    else:
        logger.info("bringing cluster local up")
        local.up(settings, progress=progress or Progress("cluster local", total=7))
        started = True
    return Target(
        kind="local",
        kubeconfig=settings.layout.admin_kubeconfig,
        started=started,
        node_address=settings.node_ip,
    )


def _manager(kind: str, *, name: str) -> Any:
    """Return the ``pytest-kubernetes`` manager of a kind, a kind or k3d cluster."""
    tool = "minikube" if kind == "minikube" else kind
    if shutil.which(tool) is None:
        raise PrerequisiteError(
            f"--cluster {kind} needs the {tool} command, which is not on PATH; "
            f"install {tool} (and Docker), or use --cluster local"
        )
    try:
        from pytest_kubernetes.providers import select_provider_manager
    except ImportError:
        raise PrerequisiteError(
            f"--cluster {kind} needs the pytest-kubernetes package; "
            "pip install pytest-kubernetes, or use --cluster local"
        ) from None
    return select_provider_manager(kind)(name)


def _open_provider(kind: Kind, *, name: str) -> Target:
    manager = _manager(kind, name=name)
    try:
        manager.create()
    except Exception as e:  # the provider raises RuntimeError and CalledProcessError
        raise ClusterError(f"{kind} could not create cluster {name}: {e}") from e
    return Target(
        kind=kind, kubeconfig=Path(manager.kubeconfig), started=True, name=name
    )


def close_cluster(target: Target, *, keep: bool) -> None:
    """Stop the cluster if this run started it and ``keep`` is not set."""
    if not target.started or keep:
        if target.started:
            logger.info("leaving cluster %s running (--keep-cluster)", target.kind)
        return
    if target.kind == "local":
        from harness.cluster import local
        from harness.cluster.settings import ClusterSettings

        logger.info("taking cluster local down")
        local.down(ClusterSettings())
    elif target.kind in PROVIDERS:
        _manager(target.kind, name=target.name or "kube-harness").delete()


def api_client(target: Target) -> "ApiClient":
    """Return a ``kubernetes`` ApiClient for the target's kubeconfig."""
    from kubernetes import config
    from kubernetes.config.config_exception import ConfigException

    try:
        return cast(
            "ApiClient",
            config.new_client_from_config(  # type: ignore[no-untyped-call]
                config_file=str(target.kubeconfig)
            ),
        )
    except (ConfigException, OSError, ValueError) as e:
        raise ClusterError(
            f"kubeconfig {target.kubeconfig} cannot be used ({e}); "
            "pass a kubeconfig with a current context"
        ) from e


def kubernetes_version(api: "ApiClient") -> str:
    """Return the API server's version (``/version``), failing fast if it is away."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    server = api.configuration.host
    try:
        info = client.VersionApi(api).get_code(_request_timeout=PROBE_TIMEOUT_S)
    except ApiException as e:
        raise ClusterError(
            f"the API server at {server} refused /version with HTTP {e.status} "
            f"{e.reason}; check the kubeconfig's credentials"
        ) from e
    except (HTTPError, OSError) as e:
        raise ClusterError(
            f"no API server answers at {server} ({type(e).__name__}); "
            "start the cluster or pass the kubeconfig of a running one"
        ) from e
    return str(info.git_version)


def node_address(api: "ApiClient") -> str:
    """Return the InternalIP of a Ready node, where NodePorts answer."""
    from kubernetes import client

    nodes = client.CoreV1Api(api).list_node(_request_timeout=PROBE_TIMEOUT_S).items
    for node in nodes:
        status = node.status
        if status is None:
            continue
        ready = any(
            c.type == "Ready" and c.status == "True" for c in status.conditions or ()
        )
        for address in status.addresses or ():
            if ready and address.type == "InternalIP":
                return str(address.address)
    raise ClusterError(
        "no Ready node has an InternalIP; the front door's NodePort cannot be "
        "reached: check `kubectl get nodes -o wide`"
    )


def node_images(api: "ApiClient") -> set[str]:
    """Return the image references every node reports holding."""
    from kubernetes import client

    nodes = client.CoreV1Api(api).list_node(_request_timeout=PROBE_TIMEOUT_S).items
    held: set[str] | None = None
    for node in nodes:
        names = {
            name
            for image in (node.status.images or () if node.status else ())
            for name in image.names or ()
        }
        held = names if held is None else held & names
    return held or set()


def load_images(target: Target, references: Sequence[str]) -> list[str]:
    """Make ``references`` available to the cluster's nodes; return them.

    The local cluster imports the built archives into its containerd. An
    existing cluster must already hold them; the nodes' reports are checked
    so that a missing image fails the run now rather than as ImagePullBackOff.
    """
    names = image_names(references)
    if target.kind == "local":
        from harness.cluster import local
        from harness.cluster.settings import ClusterSettings

        local.load_images(ClusterSettings(), names=names)
        return list(references)
    if target.kind == "existing":
        missing = missing_images(node_images(api_client(target)), references)
        if missing:
            raise PrerequisiteError(
                f"the cluster's nodes do not hold {', '.join(missing)}; import the "
                "archives from `harness images list` into every node's runtime"
            )
        return list(references)
    # TODO: kind, k3d and minikube load images from a Docker daemon, which
    # this machine lacks; loading the OCI archives needs each tool's own
    # archive import (kind load image-archive, k3d image import).
    raise PrerequisiteError(
        f"loading images into a {target.kind} cluster is not supported yet; "
        "use --cluster local or an existing cluster that holds the images"
    )


def missing_images(held: Iterable[str], references: Iterable[str]) -> list[str]:
    """Return the references not among ``held``, with or without ``docker.io/``."""
    have = set(held)
    return [
        reference
        for reference in references
        if reference not in have and f"docker.io/{reference}" not in have
    ]


def image_names(references: Iterable[str]) -> list[str]:
    """Return the image names (``catalog``) of references the harness builds."""
    from harness.imaging import REPOSITORY

    prefix = f"{REPOSITORY}/"
    names = []
    for reference in references:
        if not reference.startswith(prefix):
            raise UsageError(
                f"image {reference} is not one the harness builds ({prefix}NAME:TAG); "
                "fix the manifest"
            )
        names.append(reference.removeprefix(prefix).split(":", 1)[0])
    return names
