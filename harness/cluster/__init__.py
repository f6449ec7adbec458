"""The embedded single-node Kubernetes cluster the experiments run on.

Upstream components run as host processes of this machine: etcd, the API
server, the controller manager, the scheduler, containerd, the kubelet,
kube-proxy and CoreDNS. ``local`` brings them up and down; the other modules
hold one concern each (certificates, kubeconfigs, component flags, the
network safety net, child processes, prerequisite checks).
"""

from harness.cluster.local import ClusterStatus, ComponentStatus, down, status, up
from harness.cluster.settings import ClusterSettings

__all__ = [
    "ClusterSettings",
    "ClusterStatus",
    "ComponentStatus",
    "down",
    "status",
    "up",
]
