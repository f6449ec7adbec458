"""The ``harness`` command line.

Each command group lives in a function of its own; every failure the harness
knows about ends in one line on standard error and a non-zero exit.
"""

import argparse
import logging
import sys
from collections.abc import Sequence

from harness import __version__, reporting_cli
from harness.cluster import cli as cluster_cli
from harness.errors import HarnessError, UsageError

logger = logging.getLogger(__name__)


def _images_build(args: argparse.Namespace) -> int:
    from harness import imaging

    built = imaging.build(names=args.names or None, force=args.force)
    for image in built:
        state = "cached" if image.cached else "built"
        print(
            f"{image.name}\t{image.reference}\t{image.size_bytes / 1e6:.0f} MB\t"
            f"{state}\t{image.archive}"
        )
    return 0


def _images_list(args: argparse.Namespace) -> int:
    from harness import imaging

    for image in imaging.list_built():
        print(
            f"{image.name}\t{image.reference}\t{image.size_bytes / 1e6:.0f} MB\t"
            f"{image.archive}"
        )
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of every ``harness`` command."""
    parser = argparse.ArgumentParser(
        prog="harness",
        description="Build, deploy and test the example system on Kubernetes.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log each step (-v) or everything (-vv)",
    )
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True)

    images = groups.add_parser("images", help="build the container images")
    image_cmds = images.add_subparsers(dest="command", metavar="ACTION", required=True)
    build = image_cmds.add_parser(
        "build", help="build the images with buildah into OCI archives in the cache"
    )
    build.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help="images to build (default: all of base, pause, catalog, customer, "
        "order, apache)",
    )
    build.add_argument(
        "--force",
        action="store_true",
        help="rebuild even when the inputs did not change",
    )
    build.set_defaults(func=_images_build)
    listing = image_cmds.add_parser("list", help="list the archives already built")
    listing.set_defaults(func=_images_list)
    cluster_cli.add_images_load(image_cmds)
    cluster_cli.add_commands(groups)
    reporting_cli.add_report_command(groups)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``harness`` command line and return its exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = {0: logging.WARNING, 1: logging.INFO}.get(args.verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except UsageError as e:
        parser.exit(2, f"harness: error: {e}\n")
    except HarnessError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("harness: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
