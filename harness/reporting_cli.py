"""The ``harness report`` command: render a run's report and say where it is.

It lives apart from :mod:`harness.reporting` so that building the parser does
not import matplotlib and Jinja; the handler imports them when it runs.
"""

import argparse
import sys
from pathlib import Path

from harness.paths import PROJECT_ROOT

#: The run ``harness report`` renders when it is given none.
DEFAULT_RUN_DIR = PROJECT_ROOT / "reports" / "latest"


def _report(args: argparse.Namespace) -> int:
    from harness import reporting

    rendered = reporting.render(
        Path(args.run_dir), screenshot=args.screenshot, timeout=args.timeout
    )
    for notice in rendered.notices:
        print(f"harness: notice: {notice}", file=sys.stderr)
    print(f"html\t{rendered.html}")
    print(f"markdown\t{rendered.markdown}")
    if rendered.screenshot is not None:
        print(f"screenshot\t{rendered.screenshot}")
    return 0


def add_report_command(
    groups: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    """Add ``report [RUN_DIR] [--screenshot]`` to the ``harness`` parser."""
    report = groups.add_parser(
        "report",
        help="write a run's report: index.html and summary.md in its folder",
        description="Render the report of a run from its results.json.",
    )
    report.add_argument(
        "run_dir",
        nargs="?",
        default=str(DEFAULT_RUN_DIR),
        metavar="RUN_DIR",
        help=f"the run's folder (default: {DEFAULT_RUN_DIR})",
    )
    report.add_argument(
        "--screenshot",
        action="store_true",
        help="also save screenshot.png of the page, taken with headless chromium",
    )
    report.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="how long the screenshot may take (default: 60)",
    )
    report.set_defaults(func=_report)
