"""Tests of the checks ``cluster up`` makes before it starts anything."""

import socket
from collections.abc import Iterator

import pytest

from harness.cluster import prerequisites
from harness.errors import PrerequisiteError


@pytest.fixture
def bound_tcp() -> Iterator[tuple[str, int]]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()


@pytest.fixture
def bound_udp_wildcard() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", 0))
        yield sock.getsockname()[1]


def test_a_busy_port_fails_with_one_line_naming_the_port(
    bound_tcp: tuple[str, int],
) -> None:
    address, port = bound_tcp
    with pytest.raises(PrerequisiteError) as caught:
        prerequisites.check_ports([(address, port)])
    message = str(caught.value)
    assert f"port {port} on {address} is taken" in message
    assert "\n" not in message


def test_a_wildcard_socket_takes_the_port_on_the_node_address(
    bound_udp_wildcard: int,
) -> None:
    clashes = prerequisites.busy_ports([("198.51.100.10", bound_udp_wildcard)])
    assert [(a, p, c.protocol) for a, p, c in clashes] == [
        ("198.51.100.10", bound_udp_wildcard, "udp")
    ]


def test_a_socket_on_another_address_leaves_the_port_free(
    bound_tcp: tuple[str, int],
) -> None:
    _, port = bound_tcp
    assert prerequisites.busy_ports([("198.51.100.10", port)]) == []


def test_listeners_include_a_socket_bound_now(bound_tcp: tuple[str, int]) -> None:
    address, port = bound_tcp
    assert prerequisites.Listener("tcp", address, port) in prerequisites.listeners()


def test_the_cgroup_controllers_the_kubelet_needs_are_found_here() -> None:
    prerequisites.check_cgroups()


def test_a_missing_cgroup_controller_is_named() -> None:
    with pytest.raises(PrerequisiteError, match="no-such-controller not mounted"):
        prerequisites.check_cgroups(controllers=("cpu", "no-such-controller"))


def test_a_missing_tool_names_its_debian_package() -> None:
    with pytest.raises(
        PrerequisiteError, match="install the Debian package kh-package"
    ):
        prerequisites.check_tools(tools={"kh-no-such-tool": "kh-package"})
