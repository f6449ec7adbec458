"""What one embedded cluster is: its addresses, ranges, names and files.

The address ranges are chosen so that nothing on this kind of machine uses
them: the machine's own interface sits in 192.0.2.0/24, so the node address
comes from another documentation range (198.51.100.0/24), and Services and
pods take the ranges Kubernetes documents by default. All of a cluster's
files live under one root-owned state directory, laid out by ``Layout``.
"""

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import UsageError

#: Where clusters keep their state unless told otherwise.
STATE_ROOT = Path("/var/lib/kube-harness")

_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?")


@dataclass(frozen=True)
class ClusterSettings:
    """Names and address ranges of one embedded cluster."""

    name: str = "local"
    state_dir: Path | None = None
    node_name: str = "harness-node"
    #: The node's address, on a bridge with no ports, with its prefix length.
    node_ip: str = "198.51.100.10"
    node_prefix: int = 24
    service_cidr: str = "10.96.0.0/16"
    pod_cidr: str = "10.244.0.0/16"
    #: The node's share of ``pod_cidr``, the first /24 the controller hands out.
    node_pod_cidr: str = "10.244.0.0/24"
    cluster_domain: str = "cluster.local"
    node_port_range: str = "30000-32767"
    #: Interfaces the cluster creates; every name starts with ``kh-``.
    node_bridge: str = "kh-node0"
    service_bridge: str = "kh-svc0"
    pod_bridge: str = "kh-pod0"
    #: Ports bound on ``node_ip``, checked free before anything starts.
    node_ports: tuple[int, ...] = field(default=(6443, 10250, 53, 30080))
    #: Ports bound on 127.0.0.1, checked free before anything starts.
    loopback_ports: tuple[int, ...] = field(
        default=(2379, 2380, 10248, 10249, 10256, 10257, 10259, 8180, 8181, 9153)
    )

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise UsageError(
                f"cluster name {self.name!r} is not a short DNS label: "
                "use lower-case letters, digits and dashes"
            )
        for label, value in (
            ("service range", self.service_cidr),
            ("pod range", self.pod_cidr),
            ("node pod range", self.node_pod_cidr),
        ):
            try:
                ipaddress.IPv4Network(value)
            except ValueError as e:
                raise UsageError(
                    f"{label} {value!r} is not an IPv4 network: give one like "
                    "10.96.0.0/16"
                ) from e
        if not ipaddress.IPv4Network(self.node_pod_cidr).subnet_of(
            ipaddress.IPv4Network(self.pod_cidr)
        ):
            raise UsageError(
                f"node pod range {self.node_pod_cidr} is outside the pod range "
                f"{self.pod_cidr}: pick a subnet of it"
            )

    @property
    def root(self) -> Path:
        """Return the state directory of this cluster."""
        return self.state_dir if self.state_dir is not None else STATE_ROOT / self.name

    @property
    def layout(self) -> "Layout":
        """Return where each of this cluster's files lives."""
        return Layout(self.root)

    @property
    def kubernetes_service_ip(self) -> str:
        """Return the ClusterIP of the ``kubernetes`` Service."""
        return str(ipaddress.IPv4Network(self.service_cidr)[1])

    @property
    def dns_ip(self) -> str:
        """Return the ClusterIP of the cluster DNS Service."""
        return str(ipaddress.IPv4Network(self.service_cidr)[10])

    @property
    def pod_gateway(self) -> str:
        """Return the pod bridge's address, the pods' default gateway."""
        return str(ipaddress.IPv4Network(self.node_pod_cidr)[1])

    @property
    def server(self) -> str:
        """Return the API server's URL."""
        return f"https://{self.node_ip}:6443"


@dataclass(frozen=True)
class Layout:
    """The files and folders under one cluster's state directory."""

    root: Path

    @property
    def pki(self) -> Path:
        """Return the folder of certificates and keys."""
        return self.root / "pki"

    @property
    def config(self) -> Path:
        """Return the folder of rendered configuration files and kubeconfigs."""
        return self.root / "config"

    @property
    def logs(self) -> Path:
        """Return the folder of one log file per component."""
        return self.root / "logs"

    @property
    def run(self) -> Path:
        """Return the folder of process records."""
        return self.root / "run"

    @property
    def data(self) -> Path:
        """Return the folder of persistent data: etcd, containerd, kubelet."""
        return self.root / "data"

    @property
    def admin_kubeconfig(self) -> Path:
        """Return the kubeconfig a user points ``KUBECONFIG`` at."""
        return self.root / "kubeconfig"

    @property
    def resolv_conf(self) -> Path:
        """Return the resolver file every component and pod is given."""
        return self.config / "resolv.conf"

    @property
    def network_record(self) -> Path:
        """Return the record of the network objects ``up`` created."""
        return self.run / "network.json"

    @property
    def sysctl_record(self) -> Path:
        """Return the record of the sysctl values found before ``up``."""
        return self.run / "sysctls.json"

    @property
    def containerd(self) -> Path:
        """Return containerd's folder: root, state, socket, CNI configuration."""
        return self.data / "containerd"

    @property
    def containerd_socket(self) -> Path:
        """Return the CRI socket the kubelet talks to."""
        return self.containerd / "containerd.sock"

    @property
    def cni_conf_dir(self) -> Path:
        """Return the folder containerd reads network configurations from."""
        return self.containerd / "net.d"

    def log(self, component: str) -> Path:
        """Return the log file of one component."""
        return self.logs / f"{component}.log"
