"""The ``harness cluster`` commands and ``harness images load``.

``add_commands`` adds the ``cluster`` group to the ``harness`` parser, and
``add_images_load`` adds the ``load`` action to its ``images`` group.
"""

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.cluster.local import ClusterStatus
from harness.cluster.settings import ClusterSettings
from harness.errors import HarnessError


def _settings(args: argparse.Namespace) -> ClusterSettings:
    state_dir = Path(args.state_dir).resolve() if args.state_dir else None
    return ClusterSettings(name=args.name, state_dir=state_dir)


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name", default="local", help="name of the cluster (default: local)"
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state directory (default: /var/lib/kube-harness/NAME)",
    )


def _up(args: argparse.Namespace) -> int:
    from harness.cluster import local

    settings = _settings(args)
    current = local.up(settings, timeout=args.timeout)
    _print_status(current)
    print(f"export KUBECONFIG={settings.layout.admin_kubeconfig}")
    return 0 if current.healthy else 1


def _down(args: argparse.Namespace) -> int:
    from harness.cluster import local

    local.down(_settings(args), purge=args.purge, purge_caches=args.purge_caches)
    return 0


def _print_status(current: ClusterStatus) -> None:
    for c in current.components:
        state = "healthy" if c.healthy else ("running" if c.running else "stopped")
        pid = str(c.pid) if c.pid is not None else "-"
        detail = f"\t{c.detail}" if c.detail and not c.healthy else ""
        print(f"{c.name:<24}{state:<9}{pid:>8}  {c.version or '-'}{detail}")


def _status(args: argparse.Namespace) -> int:
    from harness.cluster import local

    current = local.status(_settings(args))
    _print_status(current)
    if not current.healthy:
        print(f"harness: cluster {current.name} is not healthy", file=sys.stderr)
        return 1
    return 0


def _images_load(args: argparse.Namespace) -> int:
    from harness.cluster import local

    for reference in local.load_images(_settings(args), names=args.names):
        print(f"loaded\t{reference}")
    return 0


def add_commands(groups: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add the ``cluster`` group (``up``, ``down``, ``status``) to ``harness``."""
    cluster = groups.add_parser("cluster", help="the embedded single-node cluster")
    actions = cluster.add_subparsers(dest="command", metavar="ACTION", required=True)

    up = actions.add_parser("up", help="start the cluster, or repair it")
    _add_target_options(up)
    up.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="how long the components may take to become usable (default: 120)",
    )
    up.set_defaults(func=_up)

    down = actions.add_parser("down", help="stop the cluster and remove its network")
    _add_target_options(down)
    down.add_argument(
        "--purge", action="store_true", help="also delete the state directory"
    )
    down.add_argument(
        "--purge-caches",
        action="store_true",
        help="also delete the cached binaries and images (a long rebuild follows)",
    )
    down.set_defaults(func=_down)

    status = actions.add_parser("status", help="show each component's health")
    _add_target_options(status)
    status.set_defaults(func=_status)


def add_images_load(
    image_actions: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    """Add ``images load``: import the built archives into the cluster."""
    load = image_actions.add_parser(
        "load", help="import the built images into the cluster's containerd"
    )
    load.add_argument(
        "names", nargs="*", metavar="NAME", help="images to load (default: all built)"
    )
    _add_target_options(load)
    load.set_defaults(func=_images_load)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cluster commands on their own: ``python -m harness.cluster.cli``."""
    parser = argparse.ArgumentParser(prog="python -m harness.cluster.cli")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)
    add_commands(groups)
    images = groups.add_parser("images", help="the built images")
    add_images_load(images.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except HarnessError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
