"""Kubeconfig files: how each component and the user reach the API server.

Each names the cluster's CA and one client certificate by absolute path, so
that a reissued certificate takes effect without rewriting the file.
"""

from pathlib import Path
from typing import Any

import yaml


def render(*, server: str, ca: Path, cert: Path, key: Path, user: str) -> str:
    """Return a kubeconfig with one cluster, one user and one current context."""
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "kube-harness",
                "cluster": {"server": server, "certificate-authority": str(ca)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {"client-certificate": str(cert), "client-key": str(key)},
            }
        ],
        "contexts": [
            {
                "name": "kube-harness",
                "context": {"cluster": "kube-harness", "user": user},
            }
        ],
        "current-context": "kube-harness",
        "preferences": {},
    }
    return yaml.safe_dump(document, sort_keys=False)


def write(path: Path, *, server: str, pki: Path, stem: str, user: str) -> Path:
    """Write the kubeconfig of the certificate ``<pki>/<stem>.crt`` to ``path``.

    An unchanged file is left alone, so no component watching it restarts.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render(
        server=server,
        ca=pki / "ca.crt",
        cert=pki / f"{stem}.crt",
        key=pki / f"{stem}.key",
        user=user,
    )
    try:
        unchanged = path.read_text() == text
    except OSError:
        unchanged = False
    if not unchanged:
        path.write_text(text)
        path.chmod(0o600)
    return path
