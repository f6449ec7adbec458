"""kube-harness: experiments that prove Kubernetes balances load and heals itself.

The public surface is re-exported here; the modules behind it are free to move.
"""

from harness.errors import HarnessError

__version__ = "0.1.0"

__all__ = ["HarnessError", "__version__"]
