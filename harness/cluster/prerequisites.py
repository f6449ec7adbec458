"""What the machine must offer before ``cluster up`` starts anything.

Each check raises ``PrerequisiteError`` with one line that names what is
missing and what to do, so ``up`` fails before it has changed anything.
"""

import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.errors import PrerequisiteError

#: cgroup v1 controllers the kubelet and runc need.
CGROUP_CONTROLLERS = (
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "pids",
    "devices",
    "freezer",
)

#: Commands the cluster runs, and the Debian package that has each.
TOOLS = {
    "containerd": "containerd",
    "containerd-shim-runc-v2": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "ip": "iproute2",
    "iptables": "iptables",
    "iptables-save": "iptables",
    "iptables-restore": "iptables",
    "ip6tables-save": "iptables",
    "ip6tables-restore": "iptables",
    "conntrack": "conntrack",
    "unshare": "util-linux",
    "nsenter": "util-linux",
    "mount": "mount",
    "buildah": "buildah",
    "catatonit": "catatonit",
}

#: CNI plugins the cluster's network uses, in Debian's folder for them.
CNI_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")

_TCP_LISTEN = "0A"
_STATE_COLUMN = 3


@dataclass(frozen=True)
class Listener:
    """A socket bound on this machine: protocol, address and port."""

    protocol: str
    address: str
    port: int


def _decode_v4(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    return ".".join(str(b) for b in reversed(raw))


def _decode_v6(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    words = [raw[i : i + 4][::-1] for i in range(0, 16, 4)]
    joined = b"".join(words)
    if joined == bytes(16):
        return "::"
    if joined[:12] == bytes(10) + b"\xff\xff":
        return ".".join(str(b) for b in joined[12:])
    return ":".join(joined[i : i + 2].hex() for i in range(0, 16, 2))


def listeners() -> list[Listener]:
    """Return the TCP sockets listening and UDP sockets bound on this machine."""
    found = []
    for protocol, family in (("tcp", "4"), ("tcp", "6"), ("udp", "4"), ("udp", "6")):
        name = protocol if family == "4" else f"{protocol}6"
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            columns = line.split()
            if protocol == "tcp" and columns[_STATE_COLUMN] != _TCP_LISTEN:
                continue
            hex_address, hex_port = columns[1].split(":")
            decode = _decode_v4 if family == "4" else _decode_v6
            found.append(Listener(protocol, decode(hex_address), int(hex_port, 16)))
    return found


def busy_ports(
    wanted: Iterable[tuple[str, int]], *, bound: Iterable[Listener] | None = None
) -> list[tuple[str, int, Listener]]:
    """Return the wanted (address, port) pairs that a socket already takes.

    A socket on the wildcard address takes the port on every address.
    """
    taken = list(listeners() if bound is None else bound)
    clashes = []
    for address, port in wanted:
        for listener in taken:
            if listener.port == port and listener.address in (address, "0.0.0.0", "::"):
                clashes.append((address, port, listener))
                break
    return clashes


def check_root() -> None:
    """Fail unless the harness runs as root."""
    if os.geteuid() != 0:
        raise PrerequisiteError(
            "cluster up needs root (network, mounts, cgroups): run it with sudo"
        )


def check_cgroups(*, controllers: Iterable[str] = CGROUP_CONTROLLERS) -> None:
    """Fail unless every needed cgroup v1 controller is mounted."""
    mounted = Path("/proc/self/mounts").read_text()
    missing = []
    for controller in controllers:
        if not any(
            line.split()[2] == "cgroup" and controller in line.split()[3].split(",")
            for line in mounted.splitlines()
            if len(line.split()) > 3
        ):
            missing.append(controller)
    if missing:
        raise PrerequisiteError(
            f"cgroup controller(s) {', '.join(missing)} not mounted: "
            "mount them (cgroup v1) or use a kernel that has them"
        )


def check_tools(*, tools: Mapping[str, str] = TOOLS) -> None:
    """Fail naming the first missing command or CNI plugin and its package."""
    for tool, package in tools.items():
        if shutil.which(tool) is None:
            raise PrerequisiteError(
                f"{tool} not found: install the Debian package {package} (make system)"
            )
    for plugin in CNI_PLUGINS:
        if not os.access(CNI_DIR / plugin, os.X_OK):
            raise PrerequisiteError(
                f"CNI plugin {CNI_DIR / plugin} not found: install the Debian "
                "package containernetworking-plugins (make system)"
            )


def check_binaries_available() -> None:
    """Fail unless the Kubernetes binaries exist or Go is there to build them."""
    from harness import binaries

    if binaries.find() is not None:
        return
    binaries.find_go()


def check_ports(wanted: Iterable[tuple[str, int]]) -> None:
    """Fail naming the first wanted port that another socket already takes."""
    clashes = busy_ports(wanted)
    if clashes:
        address, port, listener = clashes[0]
        raise PrerequisiteError(
            f"port {port} on {address} is taken ({listener.protocol} socket on "
            f"{listener.address}): stop what listens there, or `harness cluster "
            "down` a cluster left running"
        )
