"""Where the harness keeps its caches and state, and where the project lives.

Caches (wheels, root file systems, image archives, binaries) survive between
runs so that a second run is fast; they are keyed by their inputs. The cache
root is ``$HARNESS_CACHE``, else ``$XDG_CACHE_HOME/kube-harness``, else
``~/.cache/kube-harness``.
"""

import os
from pathlib import Path

#: The repository checkout this package was imported from.
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Return the cache root, without creating it."""
    explicit = os.environ.get("HARNESS_CACHE")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return (base / "kube-harness").resolve()


def images_dir() -> Path:
    """Return the folder that holds the OCI archives of the built images."""
    return cache_dir() / "images"
