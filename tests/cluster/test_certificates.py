"""Tests of the cluster's certificate authority and the certificates it issues."""

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import (
    PolicyBuilder,
    ServerVerifier,
    Store,
    VerificationError,
)

from harness.cluster import certificates
from harness.cluster.settings import ClusterSettings


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> ClusterSettings:
    return ClusterSettings(state_dir=tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def pki(settings: ClusterSettings) -> Path:
    return certificates.ensure(settings)


def _load(pki: Path, stem: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate((pki / f"{stem}.crt").read_bytes())


def _verifier(pki: Path, name: x509.DNSName | x509.IPAddress) -> ServerVerifier:
    store = Store([_load(pki, "ca")])
    now = datetime.datetime.now(datetime.UTC)
    builder = PolicyBuilder().store(store).time(now)
    return builder.build_server_verifier(name)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(x509.DNSName("kubernetes.default.svc.cluster.local"), id="fqdn"),
        pytest.param(x509.DNSName("kubernetes"), id="short-name"),
        pytest.param(
            x509.IPAddress(ipaddress.ip_address("198.51.100.10")), id="node-ip"
        ),
        pytest.param(
            x509.IPAddress(ipaddress.ip_address("10.96.0.1")), id="service-ip"
        ),
        pytest.param(x509.IPAddress(ipaddress.ip_address("127.0.0.1")), id="loopback"),
    ],
)
def test_apiserver_certificate_verifies_for_every_name_a_client_dials(
    pki: Path, name: x509.DNSName | x509.IPAddress
) -> None:
    verifier = _verifier(pki, name)
    chain = verifier.verify(_load(pki, "apiserver"), [])
    assert chain[-1] == _load(pki, "ca")


def test_apiserver_certificate_does_not_verify_for_an_outside_name(pki: Path) -> None:
    verifier = _verifier(pki, x509.DNSName("example.com"))
    with pytest.raises(VerificationError):
        verifier.verify(_load(pki, "apiserver"), [])


@pytest.mark.parametrize(
    ("stem", "user", "groups"),
    [
        pytest.param("admin", "admin", ["system:masters"], id="admin"),
        pytest.param(
            "kubelet-client", "system:node:harness-node", ["system:nodes"], id="kubelet"
        ),
        pytest.param("kube-proxy", "system:kube-proxy", [], id="kube-proxy"),
        pytest.param(
            "controller-manager",
            "system:kube-controller-manager",
            [],
            id="controller-manager",
        ),
        pytest.param("scheduler", "system:kube-scheduler", [], id="scheduler"),
    ],
)
def test_client_certificates_name_the_user_and_groups_kubernetes_authorizes(
    pki: Path, stem: str, user: str, groups: list[str]
) -> None:
    cert = _load(pki, stem)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [a.value for a in common] == [user]
    assert [a.value for a in orgs] == groups
    cert.verify_directly_issued_by(_load(pki, "ca"))


def test_a_second_ensure_keeps_the_certificates_that_still_fit(
    settings: ClusterSettings, pki: Path
) -> None:
    before = {p.name: p.read_bytes() for p in pki.iterdir()}
    certificates.ensure(settings)
    after = {p.name: p.read_bytes() for p in pki.iterdir()}
    assert after == before


def test_a_new_node_address_reissues_the_serving_certificates(tmp_path: Path) -> None:
    first = ClusterSettings(state_dir=tmp_path)
    pki = certificates.ensure(first)
    admin = (pki / "admin.crt").read_bytes()
    certificates.ensure(ClusterSettings(state_dir=tmp_path, node_ip="198.51.100.20"))
    san = _load(pki, "apiserver").extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    ips = {str(a) for a in san.value.get_values_for_type(x509.IPAddress)}
    assert "198.51.100.20" in ips
    assert "198.51.100.10" not in ips
    assert (pki / "admin.crt").read_bytes() == admin


def test_private_keys_are_readable_by_their_owner_only(pki: Path) -> None:
    modes = {p.name: p.stat().st_mode & 0o777 for p in pki.glob("*.key")}
    assert modes
    assert set(modes.values()) == {0o600}
