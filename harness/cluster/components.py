"""The flags and configuration files of every component of the cluster.

Each component is described by a ``Spec``: its command line, the files to
write before it starts, and the endpoint that tells whether it is healthy.
Rendering is pure, so tests check it without starting anything.

Choices that matter on this kind of machine:

* Nothing listens on the machine's outside interface. The API server and the
  kubelet bind the node address (a bridge with no ports); everything else
  binds 127.0.0.1. etcd speaks plain HTTP because it listens on loopback only.
* The kubelet runs on cgroup v1 with the ``cgroupfs`` driver
  (``failCgroupV1: false``), hands pods a resolver file that points nowhere
  outside, never evicts (``"0%"`` thresholds) and never collects images
  (``imageGCHighThresholdPercent: 100``), since containerd 1.6 does not pin
  the sandbox image against collection.
* kube-proxy uses iptables, opens node ports on the node address only, does
  not route localhost node ports, and leaves conntrack sysctls alone, so the
  host changes it makes stay few and are undone by ``down``.
* CoreDNS runs as a host process on the node address rather than as a pod:
  the cluster has no CoreDNS image to run, DNS is up as soon as the API
  answers instead of after scheduling and sandbox creation, and a
  selector-less ``kube-dns`` Service with an EndpointSlice pointing at the
  node address gives pods the usual cluster DNS IP. Its Corefile serves only
  the cluster domain and the reverse zones of the cluster ranges, and has no
  ``forward`` plugin: every other name is refused, never sent outside.
"""

import ipaddress
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from harness import imaging
from harness.cluster.settings import ClusterSettings

#: The order components start in; ``down`` stops them in reverse.
ORDER = (
    "etcd",
    "containerd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "kube-proxy",
    "coredns",
)


@dataclass(frozen=True)
class Spec:
    """How to start one component and how to tell that it is healthy."""

    name: str
    argv: tuple[str, ...]
    #: URL whose 200 answer means healthy; ``unix://`` for a gRPC socket.
    health_url: str
    #: Files written before the component starts: path and content.
    files: tuple[tuple[Path, str], ...] = ()


@dataclass(frozen=True)
class Executables:
    """The binaries the specs run, by component name."""

    paths: Mapping[str, Path]

    def __getitem__(self, name: str) -> str:
        return str(self.paths[name])


def _kubeconfig(settings: ClusterSettings, component: str) -> Path:
    return settings.layout.config / f"{component}.kubeconfig"


def reverse_zones(*cidrs: str) -> list[str]:
    """Return the ``in-addr.arpa`` zones that cover the given IPv4 ranges.

    Zones fall on octet boundaries, so a /16 gives ``96.10.in-addr.arpa`` and
    a /12 widens to its /8.
    """
    zones = []
    for cidr in cidrs:
        network = ipaddress.IPv4Network(cidr)
        octets = max(1, network.prefixlen // 8)
        parts = str(network.network_address).split(".")[:octets]
        zone = ".".join(reversed(parts)) + ".in-addr.arpa"
        if zone not in zones:
            zones.append(zone)
    return zones


def etcd(settings: ClusterSettings, exe: Executables) -> Spec:
    """Return the spec of etcd: one member, loopback only."""
    member = settings.node_name
    return Spec(
        name="etcd",
        argv=(
            exe["etcd"],
            f"--name={member}",
            f"--data-dir={settings.layout.data / 'etcd'}",
            "--listen-client-urls=http://127.0.0.1:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
            "--listen-peer-urls=http://127.0.0.1:2380",
            "--initial-advertise-peer-urls=http://127.0.0.1:2380",
            f"--initial-cluster={member}=http://127.0.0.1:2380",
            "--initial-cluster-state=new",
            "--log-level=warn",
        ),
        health_url="http://127.0.0.1:2379/health",
    )


def apiserver(settings: ClusterSettings, exe: Executables) -> Spec:
    """Return the spec of the API server, bound to the node address."""
    pki = settings.layout.pki
    return Spec(
        name="kube-apiserver",
        argv=(
            exe["kube-apiserver"],
            "--etcd-servers=http://127.0.0.1:2379",
            f"--bind-address={settings.node_ip}",
            f"--advertise-address={settings.node_ip}",
            "--secure-port=6443",
            f"--service-cluster-ip-range={settings.service_cidr}",
            f"--service-node-port-range={settings.node_port_range}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            # The node's name resolves through no resolver here: dial its IP.
            "--kubelet-preferred-address-types=InternalIP",
            f"--service-account-key-file={pki / 'service-account.pub'}",
            f"--service-account-signing-key-file={pki / 'service-account.key'}",
            "--service-account-issuer="
            f"https://kubernetes.default.svc.{settings.cluster_domain}",
            f"--cert-dir={settings.layout.data / 'apiserver'}",
            "--profiling=false",
        ),
        health_url=f"{settings.server}/readyz",
    )


def controller_manager(settings: ClusterSettings, exe: Executables) -> Spec:
    """Return the spec of the controller manager."""
    pki = settings.layout.pki
    kubeconfig = _kubeconfig(settings, "controller-manager")
    return Spec(
        name="kube-controller-manager",
        argv=(
            exe["kube-controller-manager"],
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=10257",
            f"--cert-dir={settings.layout.data / 'controller-manager'}",
            f"--service-account-private-key-file={pki / 'service-account.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            "--use-service-account-credentials=true",
            "--allocate-node-cidrs=true",
            f"--cluster-cidr={settings.pod_cidr}",
            f"--node-cidr-mask-size={ipaddress.IPv4Network(settings.node_pod_cidr).prefixlen}",
            f"--service-cluster-ip-range={settings.service_cidr}",
            "--leader-elect=false",
            "--profiling=false",
        ),
        health_url="https://127.0.0.1:10257/healthz",
    )


def scheduler(settings: ClusterSettings, exe: Executables) -> Spec:
    """Return the spec of the scheduler."""
    kubeconfig = _kubeconfig(settings, "scheduler")
    return Spec(
        name="kube-scheduler",
        argv=(
            exe["kube-scheduler"],
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            "--secure-port=10259",
            f"--cert-dir={settings.layout.data / 'scheduler'}",
            "--leader-elect=false",
            "--profiling=false",
        ),
        health_url="https://127.0.0.1:10259/healthz",
    )


def kubelet_configuration(settings: ClusterSettings) -> dict[str, Any]:
    """Return the KubeletConfiguration document."""
    pki = settings.layout.pki
    zero = "0%"
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": settings.node_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "tlsCertFile": str(pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{settings.layout.containerd_socket}",
        "cgroupDriver": "cgroupfs",
        "failCgroupV1": False,
        "cgroupsPerQOS": True,
        "enforceNodeAllocatable": ["pods"],
        "clusterDomain": settings.cluster_domain,
        "clusterDNS": [settings.dns_ip],
        "resolvConf": str(settings.layout.resolv_conf),
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {
            "memory.available": zero,
            "nodefs.available": zero,
            "nodefs.inodesFree": zero,
            "imagefs.available": zero,
            "imagefs.inodesFree": zero,
        },
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "serializeImagePulls": False,
        "maxPods": 110,
        "podPidsLimit": 4096,
        "shutdownGracePeriod": "0s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "nodeStatusUpdateFrequency": "10s",
        "staticPodPath": "",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
        "logging": {"format": "text"},
    }


def kubelet(settings: ClusterSettings, exe: Executables) -> Spec:
    """Return the spec of the kubelet."""
    config = settings.layout.config / "kubelet.yaml"
    return Spec(
        name="kubelet",
        argv=(
            exe["kubelet"],
            f"--config={config}",
            f"--kubeconfig={_kubeconfig(settings, 'kubelet')}",
            f"--hostname-override={settings.node_name}",
            f"--node-ip={settings.node_ip}",
            f"--root-dir={settings.layout.data / 'kubelet'}",
            f"--cert-dir={settings.layout.data / 'kubelet' / 'pki'}",
        ),
        health_url="http://127.0.0.1:10248/healthz",
        files=((config, yaml.safe_dump(kubelet_configuration(settings))),),
    )


def kube_proxy_configuration(settings: ClusterSettings) -> dict[str, Any]:
    """Return the KubeProxyConfiguration document."""
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": "iptables",
        "clientConnection": {"kubeconfig": str(_kubeconfig(settings, "kube-proxy"))},
        "hostnameOverride": settings.node_name,
        "bindAddress": settings.node_ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "clusterCIDR": settings.pod_cidr,
        "nodePortAddresses": [f"{settings.node_ip}/32"],
        "iptables": {
            "masqueradeAll": False,
            "localhostNodePorts": False,
            "minSyncPeriod": "0s",
            "syncPeriod": "30s",
        },
        # Zeros leave the machine's conntrack sysctls as they are.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
    }


def kube_proxy(settings: ClusterSettings, exe: Executables) -> Spec:
    """Return the spec of kube-proxy in iptables mode."""
    config = settings.layout.config / "kube-proxy.yaml"
    return Spec(
        name="kube-proxy",
        argv=(exe["kube-proxy"], f"--config={config}"),
        health_url="http://127.0.0.1:10256/healthz",
        files=((config, yaml.safe_dump(kube_proxy_configuration(settings))),),
    )


def corefile(settings: ClusterSettings) -> str:
    """Return the Corefile: the cluster zones only, nothing forwarded."""
    zones = [
        settings.cluster_domain,
        *reverse_zones(settings.service_cidr, settings.pod_cidr),
    ]
    kubeconfig = _kubeconfig(settings, "coredns")
    return (
        f"{' '.join(zones)} {{\n"
        f"    bind {settings.node_ip}\n"
        "    errors\n"
        "    health 127.0.0.1:8180\n"
        "    ready 127.0.0.1:8181\n"
        "    prometheus 127.0.0.1:9153\n"
        f"    kubernetes {' '.join(zones)} {{\n"
        f"        kubeconfig {kubeconfig} kube-harness\n"
        "        pods insecure\n"
        "        ttl 5\n"
        "    }\n"
        "    cache 5\n"
        "    loadbalance\n"
        "}\n"
    )


def coredns(settings: ClusterSettings, exe: Executables) -> Spec:
    """Return the spec of CoreDNS, a host process on the node address."""
    path = settings.layout.config / "Corefile"
    return Spec(
        name="coredns",
        argv=(exe["coredns"], "-conf", str(path), "-dns.port", "53"),
        health_url="http://127.0.0.1:8181/ready",
        files=((path, corefile(settings)),),
    )


#: The image every pod sandbox runs, built from catatonit by ``imaging``.
SANDBOX_IMAGE = imaging.reference("pause")


def containerd_config(settings: ClusterSettings) -> str:
    """Return containerd's configuration: private paths and the CRI plugin."""
    folder = settings.layout.containerd
    cri = '[plugins."io.containerd.grpc.v1.cri"]'
    runc = f"{cri[:-1]}.containerd.runtimes.runc]"
    return "\n".join(
        [
            "version = 2",
            f'root = "{folder / "root"}"',
            f'state = "{folder / "state"}"',
            "[grpc]",
            f'  address = "{settings.layout.containerd_socket}"',
            "[ttrpc]",
            f'  address = "{settings.layout.containerd_socket}.ttrpc"',
            '[plugins."io.containerd.internal.v1.opt"]',
            f'  path = "{folder / "opt"}"',
            cri,
            f'  sandbox_image = "{SANDBOX_IMAGE}"',
            # runc cannot write oom_score_adj without CAP_SYS_RESOURCE.
            "  restrict_oom_score_adj = true",
            '  stream_server_address = "127.0.0.1"',
            "  enable_selinux = false",
            f"{cri[:-1]}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            runc,
            '  runtime_type = "io.containerd.runc.v2"',
            f"{runc[:-1]}.options]",
            "  SystemdCgroup = false",
            f"{cri[:-1]}.cni]",
            '  bin_dir = "/usr/lib/cni"',
            f'  conf_dir = "{settings.layout.cni_conf_dir}"',
            "  max_conf_num = 1",
            "",
        ]
    )


def containerd(settings: ClusterSettings, exe: Executables) -> Spec:
    """Return the spec of containerd with its CRI plugin."""
    path = settings.layout.config / "containerd.toml"
    return Spec(
        name="containerd",
        argv=(exe["containerd"], "--config", str(path)),
        health_url=f"unix://{settings.layout.containerd_socket}",
        files=(
            (path, containerd_config(settings)),
            (
                settings.layout.cni_conf_dir / "10-kube-harness.conflist",
                cni_conflist(settings),
            ),
        ),
    )


def cni_configuration(settings: ClusterSettings) -> dict[str, Any]:
    """Return the CNI network list containerd gives every pod sandbox."""
    return {
        "cniVersion": "1.0.0",
        "name": "kube-harness",
        "plugins": [
            {
                "type": "bridge",
                "bridge": settings.pod_bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [
                        [
                            {
                                "subnet": settings.node_pod_cidr,
                                "gateway": settings.pod_gateway,
                            }
                        ]
                    ],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(settings.layout.data / "cni" / "networks"),
                },
            },
        ],
    }


def resolv_conf() -> str:
    """Return the resolver file of every component: a resolver that is not there.

    127.0.0.1 port 53 has no listener, so a name that is not in /etc/hosts
    fails at once and no query leaves the machine.
    """
    return "nameserver 127.0.0.1\noptions attempts:1 timeout:1\n"


def cni_conflist(settings: ClusterSettings) -> str:
    """Return the CNI network list as the JSON containerd reads."""
    return json.dumps(cni_configuration(settings), indent=2) + "\n"


#: Components whose spec this module renders, by name.
RENDERERS = {
    "etcd": etcd,
    "containerd": containerd,
    "kube-apiserver": apiserver,
    "kube-controller-manager": controller_manager,
    "kube-scheduler": scheduler,
    "kubelet": kubelet,
    "kube-proxy": kube_proxy,
    "coredns": coredns,
}
