"""How long the images take to build, cold and cached, and how big they are.

Cold means a fresh buildah storage and every image forced, one after the
other in build order; the root file system tar and the wheelhouse stay in
the cache, since they are built once per recipe. ``--debootstrap`` deletes
the cached root file system first, so that its debootstrap and trimming are
timed as well. Cached is a second ``harness images build`` right after.

Writes ``benchmarks/results/images.json``.

Run: ``.venv/bin/python benchmarks/bench_images.py [--debootstrap]``
"""

import argparse
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import imaging
from harness.paths import PROJECT_ROOT
from harness.progress import Progress

RESULTS = PROJECT_ROOT / "benchmarks" / "results" / "images.json"


def main(argv: list[str] | None = None) -> int:
    """Measure the builds and write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--debootstrap",
        action="store_true",
        help="also make the root file system again and time it",
    )
    args = parser.parse_args(argv)
    progress = Progress("bench images")
    recipe = imaging.RootfsRecipe(mirror=imaging.debian_mirror())

    # The root file system: cached unless asked for, then timed on its own.
    rootfs = imaging.rootfs_path(recipe)
    if args.debootstrap:
        rootfs.unlink(missing_ok=True)
    rootfs_seconds: float | None = None
    if not rootfs.exists():
        start = time.monotonic()
        imaging.ensure_rootfs(recipe, progress=progress)
        rootfs_seconds = time.monotonic() - start

    # Cold: an empty storage and every image forced, one at a time.
    imaging.reset_storage()
    cold: dict[str, float] = {}
    for name in imaging.IMAGE_NAMES:
        start = time.monotonic()
        imaging.build(names=[name], force=True, progress=progress)
        cold[name] = time.monotonic() - start

    # Cached: what a second ``harness images build`` costs.
    start = time.monotonic()
    cached_images = imaging.build(progress=progress)
    cached_seconds = time.monotonic() - start
    if not all(image.cached for image in cached_images):
        print("bench_images: the second build was not all cached", file=sys.stderr)
        return 1

    results: dict[str, Any] = {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rootfs": {
            "recipe_key": recipe.key,
            "tar_bytes": rootfs.stat().st_size,
            "debootstrap_and_trim_seconds": _round(rootfs_seconds),
        },
        "cold_build_seconds": {name: _round(s) for name, s in cold.items()},
        "cold_build_total_seconds": _round(sum(cold.values())),
        "cached_build_seconds": _round(cached_seconds),
        "images": {
            image.name: {
                "reference": image.reference,
                "uncompressed_bytes": image.size_bytes,
                "archive_bytes": image.archive.stat().st_size,
            }
            for image in cached_images
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    _print_summary(results)
    return 0


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


def _print_summary(results: dict[str, Any]) -> None:
    rootfs = results["rootfs"]["debootstrap_and_trim_seconds"]
    if rootfs is not None:
        print(f"root file system (debootstrap + trim + tar): {rootfs:.1f} s")
    for name, seconds in results["cold_build_seconds"].items():
        size = results["images"][name]["uncompressed_bytes"] / 1e6
        print(f"{name:9} cold {seconds:6.1f} s  {size:6.1f} MB uncompressed")
    print(f"all cold: {results['cold_build_total_seconds']:.1f} s")
    print(f"all cached: {results['cached_build_seconds'] * 1000:.0f} ms")
    print(f"results in {Path(RESULTS).relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
