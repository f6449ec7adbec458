"""The cluster's network: its bridges, routes, the safety net, and sysctls.

The safety net is in place before any component starts, so no packet for a
cluster address leaves the machine even while kube-proxy has not programmed
anything yet:

* the node address sits on ``kh-node0``, a bridge with no ports;
* the Service range is routed to ``kh-svc0``, another bridge with no ports:
  a host process's connect to a ClusterIP is routed locally, kube-proxy's
  DNAT rewrites it, and a packet nobody rewrites dies on the bridge (an
  ``unreachable`` route would fail the connect before DNAT could act);
* the pod range is ``unreachable`` beside the more specific route of the pod
  bridge ``kh-pod0``;
* chains of our own (``KH-*``) drop forwarded traffic between the pod bridge
  and any other interface, drop what pods send to host addresses other than
  the node and the pod gateway, and drop cluster-range packets about to
  leave through an interface that is not ours.

``tear_down`` removes all of that and everything kube-proxy and the kubelet
put in iptables (``KUBE-*`` chains), and puts back the sysctls ``set_up``
found.
"""

import ipaddress
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import commands
from harness.cluster.settings import ClusterSettings
from harness.errors import CommandError

logger = logging.getLogger(__name__)

#: Seconds one ``ip`` or ``iptables`` call may take.
COMMAND_TIMEOUT = 20.0

#: Prefix of every iptables chain this module creates.
CHAIN_PREFIX = "KH-"

#: Chains swept by ``tear_down``: ours, and those of kube-proxy and the kubelet.
SWEPT_CHAINS = re.compile(r"^(KH-|KUBE-)")

#: Sysctls the cluster needs, with the value it needs.
REQUIRED_SYSCTLS = {
    "net.ipv4.ip_forward": "1",
    # Replies between two pods of one bridge must meet the Service's DNAT.
    "net.bridge.bridge-nf-call-iptables": "1",
}

#: Sysctls the kubelet, kube-proxy or the CNI plugins may change, saved by
#: ``set_up`` and put back by ``tear_down``.
SAVED_SYSCTLS = (
    *REQUIRED_SYSCTLS,
    "net.bridge.bridge-nf-call-ip6tables",
    "net.ipv4.conf.all.route_localnet",
    "net.ipv6.conf.all.forwarding",
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_tcp_timeout_established",
    "net.netfilter.nf_conntrack_tcp_timeout_close_wait",
)


def run(
    argv: Sequence[str], *, check: bool = True, stdin: str | None = None
) -> commands.Completed:
    """Run a network tool within ``COMMAND_TIMEOUT``; raise CommandError on failure."""
    return commands.run(argv, timeout=COMMAND_TIMEOUT, check=check, input_text=stdin)


# --- sysctls ------------------------------------------------------------


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    """Return a sysctl's value, or None when this kernel does not have it."""
    try:
        return _sysctl_path(name).read_text().strip()
    except OSError:
        return None


def write_sysctl(name: str, value: str) -> None:
    """Set a sysctl; raise CommandError if the kernel refuses."""
    try:
        _sysctl_path(name).write_text(value + "\n")
    except OSError as e:
        raise CommandError(f"cannot set sysctl {name}={value}: {e}") from e


def save_sysctls(record: Path) -> dict[str, str]:
    """Record the sysctls as found, unless a record of an earlier run is kept.

    A record left by a run that never came down holds the values from before
    that run, which are the ones to restore.
    """
    if record.exists():
        saved: dict[str, str] = json.loads(record.read_text())
        return saved
    values = {name: v for name in SAVED_SYSCTLS if (v := read_sysctl(name)) is not None}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(values, indent=2) + "\n")
    return values


def restore_sysctls(record: Path) -> None:
    """Put back the recorded sysctls and forget the record."""
    if not record.exists():
        return
    saved: dict[str, str] = json.loads(record.read_text())
    for name, value in saved.items():
        if read_sysctl(name) != value:
            logger.debug("restoring sysctl %s=%s", name, value)
            try:
                write_sysctl(name, value)
            except CommandError as e:
                logger.warning("%s", e)
    record.unlink()


# --- links and routes ---------------------------------------------------


def link_exists(name: str) -> bool:
    """Tell whether a network interface exists."""
    return Path("/sys/class/net", name).exists()


def _bridge(name: str, address: str | None) -> None:
    if not link_exists(name):
        run(["ip", "link", "add", name, "type", "bridge"])
    if address is not None:
        run(["ip", "addr", "replace", address, "dev", name])
    run(["ip", "link", "set", name, "up"])


def _ports_of(bridge: str) -> list[str]:
    folder = Path("/sys/class/net", bridge, "brif")
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# --- iptables -------------------------------------------------------------


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that sends packets into one of ours."""

    table: str
    chain: str
    target: str


JUMPS = (
    Jump("filter", "FORWARD", "KH-FORWARD"),
    Jump("filter", "INPUT", "KH-INPUT"),
    Jump("filter", "OUTPUT", "KH-OUTPUT"),
    # kube-proxy inserts its own ACCEPT rules ahead of ours in the filter
    # table (KUBE-FORWARD accepts marked and established traffic); it never
    # touches these hooks of the mangle table, so the edge is enforced there.
    Jump("mangle", "PREROUTING", "KH-PREROUTING"),
    Jump("mangle", "POSTROUTING", "KH-POSTROUTING"),
)

#: Interfaces a cluster address may use: loopback, our bridges, pod veths.
OUR_INTERFACES = ("lo", "kh-+", "veth+")


def safety_rules(settings: ClusterSettings) -> str:
    """Return the ``iptables-restore`` input that defines our chains."""
    pod, ours = settings.pod_bridge, "kh-+"
    cluster_ranges = (
        settings.service_cidr,
        settings.pod_cidr,
        str(
            ipaddress.IPv4Interface(
                f"{settings.node_ip}/{settings.node_prefix}"
            ).network
        ),
    )
    lines = [
        "*filter",
        ":KH-FORWARD - [0:0]",
        ":KH-INPUT - [0:0]",
        ":KH-OUTPUT - [0:0]",
    ]

    # Forwarding: pods talk to pods on their bridge, to nothing else.
    lines += [
        f"-A KH-FORWARD -i {pod} -o {pod} -j RETURN",
        f"-A KH-FORWARD -i {pod} -j DROP",
        f"-A KH-FORWARD -o {pod} -j DROP",
    ]
    for cidr in cluster_ranges:
        lines.append(f"-A KH-FORWARD -d {cidr} ! -o {ours} -j DROP")

    # Pods reach the host only at the node address and their gateway.
    lines += [
        f"-A KH-INPUT -i {pod} -m conntrack --ctstate ESTABLISHED,RELATED -j RETURN",
        f"-A KH-INPUT -i {pod} -d {settings.node_ip}/32 -j RETURN",
        f"-A KH-INPUT -i {pod} -d {settings.pod_gateway}/32 -j RETURN",
        f"-A KH-INPUT -i {pod} -j DROP",
    ]

    # Host processes: cluster ranges stay on our interfaces or loopback.
    for cidr in cluster_ranges:
        lines.append(f"-A KH-OUTPUT -d {cidr} -o lo -j RETURN")
        lines.append(f"-A KH-OUTPUT -d {cidr} ! -o {ours} -j DROP")
    lines.append("COMMIT")

    # The machine's edge, whatever the filter table accepts: nothing for or
    # from a cluster address comes in or goes out through an interface that
    # is not ours, judged on the addresses before any NAT as well as after.
    lines += ["*mangle", ":KH-PREROUTING - [0:0]", ":KH-POSTROUTING - [0:0]"]
    for interface in OUR_INTERFACES:
        lines.append(f"-A KH-PREROUTING -i {interface} -j RETURN")
        lines.append(f"-A KH-POSTROUTING -o {interface} -j RETURN")
    for cidr in cluster_ranges:
        lines += [
            f"-A KH-PREROUTING -d {cidr} -j DROP",
            f"-A KH-PREROUTING -s {cidr} -j DROP",
            f"-A KH-POSTROUTING -d {cidr} -j DROP",
            f"-A KH-POSTROUTING -s {cidr} -j DROP",
            f"-A KH-POSTROUTING -m conntrack --ctorigdst {cidr} -j DROP",
            f"-A KH-POSTROUTING -m conntrack --ctorigsrc {cidr} -j DROP",
        ]
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def _install_jump(jump: Jump) -> None:
    spec = [jump.chain, "-j", jump.target]
    present = run(["iptables", "-w", "-t", jump.table, "-C", *spec], check=False)
    if present.returncode != 0:
        run(
            [
                "iptables",
                "-w",
                "-t",
                jump.table,
                "-I",
                jump.chain,
                "1",
                "-j",
                jump.target,
            ]
        )


def sweep_script(saved: str) -> str:
    """Return the ``iptables-restore --noflush`` input that removes swept chains.

    ``saved`` is the output of ``iptables-save``. Rules of other chains that
    jump into a swept chain are deleted first, then the swept chains are
    flushed and deleted; nothing else is touched.
    """
    out: list[str] = []
    table: str | None = None
    chains: list[str] = []
    deletions: list[str] = []

    def close() -> None:
        if table is not None and (chains or deletions):
            out.append(f"*{table}")
            out.extend(deletions)
            out.extend(f"-F {c}" for c in chains)
            out.extend(f"-X {c}" for c in chains)
            out.append("COMMIT")

    for line in saved.splitlines():
        if line.startswith("*"):
            table, chains, deletions = line[1:].strip(), [], []
        elif line.startswith(":"):
            name = line[1:].split()[0]
            if SWEPT_CHAINS.match(name):
                chains.append(name)
        elif line.startswith("-A "):
            parts = line.split()
            chain = parts[1]
            target = _target(parts)
            if not SWEPT_CHAINS.match(chain) and target and SWEPT_CHAINS.match(target):
                deletions.append("-D" + line[2:])
        elif line.strip() == "COMMIT":
            close()
            table = None
    return "\n".join(out) + ("\n" if out else "")


def _target(parts: Sequence[str]) -> str | None:
    for flag in ("-j", "-g"):
        if flag in parts:
            index = parts.index(flag)
            if index + 1 < len(parts):
                return parts[index + 1]
    return None


def sweep_chains() -> None:
    """Remove every ``KH-*`` and ``KUBE-*`` chain, IPv4 and IPv6."""
    for family in ("iptables", "ip6tables"):
        saved = run([f"{family}-save"], check=False)
        if saved.returncode != 0:
            logger.debug("%s-save failed: %s", family, saved.stderr.strip())
            continue
        script = sweep_script(saved.stdout)
        if script:
            run([f"{family}-restore", "-w", "--noflush"], stdin=script)


#: Chains every table has; whether a table shows them says nothing of ours.
BUILT_IN_CHAINS = frozenset({"INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"})


def chains() -> set[str]:
    """Return ``family:table:chain`` for every user-defined iptables chain."""
    found = set()
    for family in ("iptables", "ip6tables"):
        saved = run([f"{family}-save"], check=False)
        table = ""
        for line in saved.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith(":"):
                name = line[1:].split()[0]
                if name not in BUILT_IN_CHAINS:
                    found.add(f"{family}:{table}:{name}")
    return found


# --- the whole net --------------------------------------------------------


@dataclass(frozen=True)
class NetworkRecord:
    """The objects ``set_up`` created, so that ``tear_down`` finds them."""

    links: tuple[str, ...]
    routes: tuple[tuple[str, ...], ...]

    def write(self, path: Path) -> None:
        """Write the record as JSON."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"links": list(self.links), "routes": [list(r) for r in self.routes]}
        path.write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def read(cls, path: Path) -> "NetworkRecord | None":
        """Read a record, or return None if there is none."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return cls(
            links=tuple(data["links"]),
            routes=tuple(tuple(r) for r in data["routes"]),
        )


def planned(settings: ClusterSettings) -> NetworkRecord:
    """Return the links and routes a cluster with these settings uses."""
    return NetworkRecord(
        links=(settings.node_bridge, settings.service_bridge, settings.pod_bridge),
        routes=(
            (
                settings.service_cidr,
                "dev",
                settings.service_bridge,
                "src",
                settings.node_ip,
            ),
            ("unreachable", settings.pod_cidr),
        ),
    )


def set_up(settings: ClusterSettings) -> None:
    """Create the bridges, routes, safety chains and sysctls; idempotent."""
    layout = settings.layout
    plan = planned(settings)
    plan.write(layout.network_record)

    # Sysctls: record what the machine had, then set what the cluster needs.
    save_sysctls(layout.sysctl_record)
    for name, value in REQUIRED_SYSCTLS.items():
        if read_sysctl(name) != value:
            write_sysctl(name, value)

    # The chains go in first, so they guard the links from the moment they exist.
    run(["iptables-restore", "-w", "--noflush"], stdin=safety_rules(settings))
    for jump in JUMPS:
        _install_jump(jump)

    _bridge(settings.node_bridge, f"{settings.node_ip}/{settings.node_prefix}")
    _bridge(settings.service_bridge, None)
    _bridge(
        settings.pod_bridge,
        f"{settings.pod_gateway}/"
        f"{ipaddress.IPv4Network(settings.node_pod_cidr).prefixlen}",
    )
    for route in plan.routes:
        run(["ip", "route", "replace", *route])
    logger.debug("network of cluster %s is set up", settings.name)


# TODO: the steps below stop at the first failing command, so a failed
# iptables-restore leaves the sysctls unrestored; each step should run and
# the errors be raised together at the end.
def tear_down(settings: ClusterSettings) -> None:
    """Remove what ``set_up``, kube-proxy, the kubelet and CNI left; restore sysctls."""
    layout = settings.layout
    record = NetworkRecord.read(layout.network_record) or planned(settings)

    # Routes first: the bridges' own routes go with the bridges.
    for route in record.routes:
        run(["ip", "route", "del", *route], check=False)

    # Pod veths (if their namespaces outlived the pods), then the bridges.
    for bridge in record.links:
        for port in _ports_of(bridge):
            run(["ip", "link", "del", port], check=False)
        if link_exists(bridge):
            run(["ip", "link", "del", bridge], check=False)

    sweep_chains()
    # TODO: conntrack entries of cluster addresses outlive down until they
    # time out; they are harmless to a later cluster (fresh source ports), but
    # `conntrack -D` per cluster range would leave the table as up found it.
    restore_sysctls(layout.sysctl_record)
    layout.network_record.unlink(missing_ok=True)
    logger.debug("network of cluster %s is torn down", settings.name)


@dataclass(frozen=True)
class Snapshot:
    """The machine's network objects and mounts at one moment, for comparison."""

    links: frozenset[str]
    addresses: frozenset[str]
    routes: frozenset[str]
    chains: frozenset[str]
    mounts: frozenset[str]


def snapshot() -> Snapshot:
    """Return the interfaces, addresses, routes, chains and mounts of the machine."""
    links = run(["ip", "-o", "link", "show"]).stdout
    addresses = run(["ip", "-o", "addr", "show"]).stdout
    routes = run(["ip", "route", "show", "table", "all"]).stdout
    routes6 = run(["ip", "-6", "route", "show", "table", "all"]).stdout
    mounts = Path("/proc/self/mountinfo").read_text()
    return Snapshot(
        links=frozenset(
            line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
        ),
        addresses=frozenset(
            " ".join(line.split()[1:4]) for line in addresses.splitlines()
        ),
        routes=frozenset((routes + routes6).splitlines()),
        chains=frozenset(chains()),
        mounts=frozenset(" ".join(line.split()[3:5]) for line in mounts.splitlines()),
    )
