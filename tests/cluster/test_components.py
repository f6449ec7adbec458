"""Tests of the flags and configuration files rendered for each component."""

import http.server
import ipaddress
import json
import re
import threading
import tomllib
from pathlib import Path

import pytest
import yaml

from harness import imaging
from harness.cluster import components, local, processes
from harness.cluster.settings import ClusterSettings

SETTINGS = ClusterSettings(state_dir=Path("/var/lib/kube-harness/unit"))
EXE = components.Executables(
    paths={name: Path(f"/opt/bin/{name}") for name in components.ORDER}
)
ADDRESS_FLAGS = re.compile(
    r"--(bind-address|advertise-address|listen-client-urls|listen-peer-urls)=(.*)"
)


def _spec(name: str) -> components.Spec:
    return components.RENDERERS[name](SETTINGS, EXE)


def _file(spec: components.Spec, suffix: str) -> str:
    return next(text for path, text in spec.files if path.name.endswith(suffix))


def test_every_rendered_component_is_one_start_order_knows() -> None:
    assert set(components.RENDERERS) == set(components.ORDER)


@pytest.mark.parametrize("name", [pytest.param(n, id=n) for n in components.ORDER])
def test_no_component_listens_beyond_loopback_and_the_node_address(name: str) -> None:
    allowed = {"127.0.0.1", SETTINGS.node_ip}
    for arg in _spec(name).argv:
        match = ADDRESS_FLAGS.fullmatch(arg)
        if match:
            hosts = re.findall(r"\d+\.\d+\.\d+\.\d+", match.group(2))
            assert set(hosts) <= allowed, arg


def test_kubelet_never_evicts_never_collects_images_and_runs_on_cgroup_v1() -> None:
    config = yaml.safe_load(_file(_spec("kubelet"), "kubelet.yaml"))
    assert config["cgroupDriver"] == "cgroupfs"
    assert config["failCgroupV1"] is False
    assert config["imageGCHighThresholdPercent"] == 100
    assert set(config["evictionHard"].values()) == {"0%"}
    assert config["address"] == SETTINGS.node_ip
    assert config["healthzBindAddress"] == "127.0.0.1"
    assert config["readOnlyPort"] == 0


def test_kubelet_sends_pods_to_the_cluster_dns_and_a_resolver_that_is_not_there() -> (
    None
):
    config = yaml.safe_load(_file(_spec("kubelet"), "kubelet.yaml"))
    service_range = ipaddress.IPv4Network(SETTINGS.service_cidr)
    assert all(
        ipaddress.IPv4Address(ip) in service_range for ip in config["clusterDNS"]
    )
    assert config["resolvConf"] == str(SETTINGS.layout.resolv_conf)
    servers = re.findall(r"^nameserver\s+(\S+)", components.resolv_conf(), re.M)
    assert servers
    assert all(ipaddress.ip_address(s).is_loopback for s in servers)


def test_kube_proxy_opens_node_ports_on_the_node_address_only() -> None:
    config = yaml.safe_load(_file(_spec("kube-proxy"), "kube-proxy.yaml"))
    assert config["mode"] == "iptables"
    assert config["nodePortAddresses"] == [f"{SETTINGS.node_ip}/32"]
    assert config["iptables"]["localhostNodePorts"] is False
    assert config["conntrack"]["maxPerCore"] == 0
    assert config["clusterCIDR"] == SETTINGS.pod_cidr


def test_corefile_serves_cluster_zones_and_forwards_nothing() -> None:
    corefile = components.corefile(SETTINGS)
    assert "forward" not in corefile
    assert "loop" not in corefile
    first_line = corefile.splitlines()[0]
    assert first_line.split()[:-1] == [
        "cluster.local",
        "96.10.in-addr.arpa",
        "244.10.in-addr.arpa",
    ]
    assert f"bind {SETTINGS.node_ip}" in corefile


@pytest.mark.parametrize(
    ("cidrs", "zones"),
    [
        pytest.param(("10.96.0.0/16",), ["96.10.in-addr.arpa"], id="slash-16"),
        pytest.param(("10.244.0.0/24",), ["0.244.10.in-addr.arpa"], id="slash-24"),
        pytest.param(("172.16.0.0/12",), ["172.in-addr.arpa"], id="slash-12-widens"),
        pytest.param(
            ("10.96.0.0/16", "10.96.0.0/16"), ["96.10.in-addr.arpa"], id="deduplicated"
        ),
    ],
)
def test_reverse_zones_cover_the_ranges_on_octet_boundaries(
    cidrs: tuple[str, ...], zones: list[str]
) -> None:
    assert components.reverse_zones(*cidrs) == zones


def test_containerd_avoids_oom_score_writes_and_uses_private_paths() -> None:
    spec = _spec("containerd")
    config = tomllib.loads(_file(spec, ".toml"))
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == components.SANDBOX_IMAGE
    assert cri["cni"]["bin_dir"] == "/usr/lib/cni"
    for path in (
        config["root"],
        config["state"],
        config["grpc"]["address"],
        cri["cni"]["conf_dir"],
    ):
        assert Path(path).is_relative_to(SETTINGS.root)
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is False


def test_pod_network_hands_out_the_node_share_with_hairpin_and_no_masquerade() -> None:
    conflist = json.loads(_file(_spec("containerd"), ".conflist"))
    bridge = conflist["plugins"][0]
    assert bridge["bridge"] == SETTINGS.pod_bridge
    assert bridge["hairpinMode"] is True
    assert bridge["ipMasq"] is False
    ranges = bridge["ipam"]["ranges"]
    assert ranges == [[{"subnet": "10.244.0.0/24", "gateway": "10.244.0.1"}]]


def test_apiserver_prefers_the_node_ip_over_names_when_dialing_the_kubelet() -> None:
    argv = _spec("kube-apiserver").argv
    assert "--kubelet-preferred-address-types=InternalIP" in argv
    assert f"--service-cluster-ip-range={SETTINGS.service_cidr}" in argv
    low, high = map(int, SETTINGS.node_port_range.split("-"))
    assert low <= 30080 <= high


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("HTTP_PROXY", id="upper"),
        pytest.param("https_proxy", id="lower"),
        pytest.param("All_Proxy", id="mixed"),
    ],
)
def test_component_environments_carry_no_proxy_variable(name: str) -> None:
    env = processes.without_proxies({name: "http://127.0.0.1:9", "PATH": "/bin"})
    assert env["PATH"] == "/bin"
    assert {k for k in env if k.lower().endswith("_proxy")} == {"NO_PROXY", "no_proxy"}
    assert env["NO_PROXY"] == env["no_proxy"] == "*"


def test_probe_ignores_a_proxy_variable_and_reaches_the_local_server(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Ok)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    try:
        # Port 9 (discard) has no listener: a probe sent to the proxy fails.
        monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
        monkeypatch.delenv("no_proxy", raising=False)
        assert local.probe(f"http://127.0.0.1:{server.server_port}/healthz") == ""
    finally:
        thread.join(timeout=5)
        server.server_close()


def test_the_sandbox_image_is_the_pause_image_the_harness_builds() -> None:
    assert imaging.reference("pause") == components.SANDBOX_IMAGE
