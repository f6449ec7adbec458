"""The cluster's certificate authority and every certificate issued from it.

Kubernetes authenticates its components by client certificate: the common
name is the user and each organisation a group, so the kubelet's certificate
says ``system:node:<node>`` in ``system:nodes`` for the Node authorizer, and
the administrator's says ``system:masters``. The API server's serving
certificate names every address a client dials, the ``kubernetes`` Service's
ClusterIP included, so pods verify it too. Keys are ECDSA P-256, which Go
and Python both accept and which are generated in microseconds; the
service-account signing key is RSA, the algorithm every token consumer
expects.
"""

import datetime
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness.cluster.settings import ClusterSettings

logger = logging.getLogger(__name__)

#: How long issued certificates stay valid; a cluster is rebuilt well before.
VALIDITY = datetime.timedelta(days=365)

#: Certificates must be valid for at least this long to be reused.
MINIMUM_REMAINING = datetime.timedelta(days=7)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Identity:
    """Who one certificate names, and what it may be used for."""

    #: File stem under the pki folder: ``<stem>.crt`` and ``<stem>.key``.
    stem: str
    common_name: str
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    client: bool = True
    server: bool = False


def identities(settings: ClusterSettings) -> tuple[Identity, ...]:
    """Return every certificate a cluster with these settings needs."""
    domain = settings.cluster_domain
    node = settings.node_name
    return (
        Identity(
            stem="apiserver",
            common_name="kube-apiserver",
            dns_names=(
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                f"kubernetes.default.svc.{domain}",
                "localhost",
                node,
            ),
            ip_addresses=(
                settings.node_ip,
                settings.kubernetes_service_ip,
                "127.0.0.1",
            ),
            client=False,
            server=True,
        ),
        Identity(
            stem="apiserver-kubelet-client",
            common_name="kube-apiserver-kubelet-client",
            organizations=("system:masters",),
        ),
        Identity(stem="admin", common_name="admin", organizations=("system:masters",)),
        Identity(
            stem="controller-manager", common_name="system:kube-controller-manager"
        ),
        Identity(stem="scheduler", common_name="system:kube-scheduler"),
        Identity(
            stem="kubelet-client",
            common_name=f"system:node:{node}",
            organizations=("system:nodes",),
        ),
        Identity(
            stem="kubelet-serving",
            common_name=node,
            dns_names=(node,),
            ip_addresses=(settings.node_ip,),
            client=False,
            server=True,
        ),
        Identity(stem="kube-proxy", common_name="system:kube-proxy"),
        Identity(stem="coredns", common_name=COREDNS_USER),
    )


#: The user CoreDNS authenticates as; ``bootstrap`` grants it read access.
COREDNS_USER = "kube-harness:coredns"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _name(common_name: str, organizations: Sequence[str] = ()) -> x509.Name:
    attributes = [
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in organizations
    ]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _write_key(path: Path, key: PrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def create_authority(
    *, common_name: str
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Create a self-signed certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY * 10)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue(
    identity: Identity,
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Issue a key and a certificate for one identity, signed by the CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = []
    if identity.client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if identity.server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(identity.common_name, identity.organizations))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    names: list[x509.GeneralName] = [x509.DNSName(n) for n in identity.dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(a)) for a in identity.ip_addresses]
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(names), critical=False
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _reusable(path: Path, identity: Identity, ca_cert: x509.Certificate) -> bool:
    """Tell whether a certificate on disk is still the one ``identity`` needs."""
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError):
        return False
    if cert.issuer != ca_cert.subject:
        return False
    if cert.not_valid_after_utc - _now() < MINIMUM_REMAINING:
        return False
    if cert.subject != _name(identity.common_name, identity.organizations):
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return not identity.dns_names and not identity.ip_addresses
    dns = set(san.value.get_values_for_type(x509.DNSName))
    ips = {str(a) for a in san.value.get_values_for_type(x509.IPAddress)}
    return dns == set(identity.dns_names) and ips == set(identity.ip_addresses)


def ensure(settings: ClusterSettings) -> Path:
    """Create the CA, every certificate and the service-account keys if missing.

    Files that exist and still fit the settings are kept, so a restarted
    cluster keeps trusting the tokens and kubeconfigs it handed out.
    Returns the pki folder.
    """
    pki = settings.layout.pki
    pki.mkdir(parents=True, exist_ok=True, mode=0o700)

    # The authority: kept if readable, else created, which voids every cert.
    ca_crt, ca_key_path = pki / "ca.crt", pki / "ca.key"
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_crt.read_bytes())
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an ECDSA key")
        ca_key = loaded
    except (OSError, ValueError) as e:
        logger.debug("creating a certificate authority in %s (%s)", pki, e)
        ca_key, ca_cert = create_authority(common_name=f"kube-harness-{settings.name}")
        _write_key(ca_key_path, ca_key)
        _write_cert(ca_crt, ca_cert)

    # One key and certificate per identity.
    for identity in identities(settings):
        crt = pki / f"{identity.stem}.crt"
        if (
            _reusable(crt, identity, ca_cert)
            and (pki / f"{identity.stem}.key").exists()
        ):
            continue
        logger.debug("issuing %s for %s", crt.name, identity.common_name)
        key, cert = issue(identity, ca_key=ca_key, ca_cert=ca_cert)
        _write_key(pki / f"{identity.stem}.key", key)
        _write_cert(crt, cert)

    # The key pair the API server verifies and the controller manager signs
    # service-account tokens with.
    sa_key, sa_pub = pki / "service-account.key", pki / "service-account.pub"
    if not (sa_key.exists() and sa_pub.exists()):
        signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(sa_key, signing)
        sa_pub.write_bytes(
            signing.public_key().public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo,
            )
        )
    return pki
