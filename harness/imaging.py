"""Building the container images of the example system, without Docker or a registry.

The cluster pulls nothing: each image is built with buildah into an OCI
archive in the cache, which the node's containerd imports. The base is a
Debian root file system made with debootstrap and trimmed; the services
install their wheels from a wheelhouse that ``pip download`` fills on the
host, because nothing inside a build may reach the network (every buildah
call runs in a network namespace of its own, with no interface up).

An image is rebuilt only when one of its inputs changed. Its input hash
covers its Containerfile, every file it copies, the hash of its base, the
wheelhouse's requirements and the recipe of the root file system, so that a
change to the base rebuilds every image on top of it.
"""

import fcntl
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import struct
import sys
import tarfile
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import __version__, commands
from harness.errors import BuildError, CommandError, PrerequisiteError, UsageError
from harness.paths import PROJECT_ROOT, cache_dir, images_dir
from harness.progress import Progress

logger = logging.getLogger(__name__)

#: Where every image of the project is named; nothing is ever pushed there.
REPOSITORY = "localhost/kube-harness"

#: The services of the system under test, each an image on the base.
SERVICES = ("catalog", "customer", "order")

#: The label that carries an image's input hash inside its config.
HASH_LABEL = "io.kube-harness.input-hash"

#: The uid and gid the images run as, and the name the base gives them.
APP_UID = 10001
APP_USER = "app"

#: The static init of Debian's catatonit package, the whole pause image.
CATATONIT = Path("/usr/bin/catatonit")

#: Bump when the shell script that trims the root file system changes.
TRIM_VERSION = 1

#: Version of the input hash's own layout; bump to rebuild every image.
_HASH_FORMAT = 1

# Names in a copied folder that never go into an image (the same rules as the
# repository's .containerignore, for builds that use the checkout as context).
_IGNORED_NAMES = frozenset(
    {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".DS_Store"}
)
_IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")

_DEBOOTSTRAP_TIMEOUT = 1800.0
_PIP_TIMEOUT = 600.0
_BUILD_TIMEOUT = 1200.0
_ARCHIVE_TIMEOUT = 600.0
_LOCK_TIMEOUT = 1800.0


@dataclass(frozen=True)
class ImageSpec:
    """How one image is made: its Containerfile and what its context holds."""

    name: str
    #: The Containerfile, relative to the project root.
    containerfile: str
    #: Files and folders of the project that the context holds.
    sources: tuple[str, ...]
    #: The name of the image it is built on, if it is one of ours.
    base: str | None = None
    #: The context holds ``wheels/``, the wheelhouse of the services.
    wheels: bool = False
    #: The context holds ``rootfs.tar``, the Debian root file system.
    rootfs: bool = False
    #: The context holds ``catatonit``, the host's static init.
    catatonit: bool = False

    @property
    def reference(self) -> str:
        """Return the name and tag the image gets."""
        return reference(self.name)


def _service(name: str) -> ImageSpec:
    return ImageSpec(
        name=name,
        containerfile=f"services/{name}/Containerfile",
        sources=(
            "services/__init__.py",
            "services/requirements.txt",
            "services/kit",
            f"services/{name}",
        ),
        base="base",
        wheels=True,
    )


#: Every image the harness builds, in an order that puts a base before its users.
SPECS: dict[str, ImageSpec] = {
    "base": ImageSpec(
        name="base",
        containerfile="services/base/Containerfile",
        sources=("services/base",),
        rootfs=True,
    ),
    "pause": ImageSpec(
        name="pause",
        containerfile="harness/images/pause/Containerfile",
        sources=("harness/images/pause",),
        catatonit=True,
    ),
    **{name: _service(name) for name in SERVICES},
    "apache": ImageSpec(
        name="apache",
        containerfile="services/apache/Containerfile",
        sources=("services/apache",),
        base="base",
    ),
}

#: The names ``harness images build`` accepts, in build order.
IMAGE_NAMES = tuple(SPECS)


@dataclass(frozen=True)
class BuiltImage:
    """An image archive in the cache, and whether this run had to build it."""

    name: str
    reference: str
    archive: Path
    size_bytes: int
    input_hash: str
    built_at: str
    cached: bool


@dataclass(frozen=True)
class RootfsRecipe:
    """What goes into the Debian root file system of the base image."""

    mirror: str
    suite: str = "bookworm"
    variant: str = "minbase"
    packages: tuple[str, ...] = ("python3", "apache2-bin", "ca-certificates")
    #: Packages debootstrap drags in that nothing in the images runs: perl is
    #: a dependency of apache2-bin for its helper scripts, not of httpd.
    purged: tuple[str, ...] = ("perl", "perl-modules-5.36", "libperl5.36")
    trim_version: int = TRIM_VERSION

    @property
    def key(self) -> str:
        """Return a short hash of the recipe, which names its cached tar."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def debootstrap_args(self, target: Path) -> list[str]:
        """Return the arguments of the debootstrap call that makes ``target``."""
        return [
            f"--variant={self.variant}",
            f"--include={','.join(self.packages)}",
            self.suite,
            str(target),
            self.mirror,
        ]

    def trim_script(self) -> str:
        """Return the shell script, run inside the new root, that trims it."""
        purged = " ".join(self.purged)
        return f"""set -eu
dpkg --purge --force-depends {purged} >/dev/null
rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/cache/debconf/*-old \\
    /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/* \\
    /usr/share/lintian /usr/share/bug
find /var/log -type f -delete
find / -xdev -name __pycache__ -type d -prune -exec rm -rf {{}} +
# The host's resolver and name must not leak into an image: the runtime
# mounts its own.
: > /etc/resolv.conf
: > /etc/hostname
printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' \\
    > /etc/hosts
# Bytecode for the standard library, once and for all images, so that a
# service does not compile it at every start on a read-only root.
python3 -m compileall -q -j 0 --invalidation-mode unchecked-hash \\
    /usr/lib/python3.11 /usr/lib/python3/dist-packages >/dev/null
groupadd --gid {APP_UID} {APP_USER}
useradd --uid {APP_UID} --gid {APP_UID} --no-create-home \\
    --home-dir /nonexistent --shell /usr/sbin/nologin {APP_USER}
"""


@dataclass(frozen=True)
class BuildInputs:
    """What the input hashes are computed from, apart from the specs."""

    project_root: Path
    rootfs_key: str
    wheelhouse_key: str
    catatonit: Path = CATATONIT
    specs: dict[str, ImageSpec] = field(default_factory=lambda: dict(SPECS))

    @classmethod
    def current(cls) -> "BuildInputs":
        """Return the inputs of this checkout on this machine."""
        return cls(
            project_root=PROJECT_ROOT,
            rootfs_key=RootfsRecipe(mirror=debian_mirror()).key,
            wheelhouse_key=wheelhouse_key(PROJECT_ROOT / "services/requirements.txt"),
        )


def reference(name: str) -> str:
    """Return the reference of image ``name``: ``localhost/kube-harness/NAME:TAG``."""
    return f"{REPOSITORY}/{name}:{__version__}"


def resolve(names: Iterable[str] | None) -> list[str]:
    """Return ``names`` with the bases they need, in build order (all if None)."""
    if names is None:
        return list(IMAGE_NAMES)
    wanted = set()
    for name in names:
        if name not in SPECS:
            raise UsageError(
                f"image {name!r} is not one of ours; choose from "
                f"{', '.join(IMAGE_NAMES)}"
            )
        wanted.add(name)
        base = SPECS[name].base
        while base is not None:
            wanted.add(base)
            base = SPECS[base].base
    return [name for name in IMAGE_NAMES if name in wanted]


# --- input hashes -----------------------------------------------------------


def is_ignored(path: Path) -> bool:
    """Tell whether a file or folder never goes into a build context."""
    return path.name in _IGNORED_NAMES or path.name.endswith(_IGNORED_SUFFIXES)


def context_files(root: Path, sources: Sequence[str]) -> list[str]:
    """Return the files below ``sources`` that a context holds, relative to root."""
    found: set[str] = set()
    for source in sources:
        top = root / source
        if not top.exists():
            raise BuildError(
                f"{top} does not exist, yet an image copies it; restore it or "
                "leave that image out"
            )
        if top.is_file():
            found.add(source)
            continue
        for folder, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if not is_ignored(Path(d)))
            for name in files:
                path = Path(folder, name)
                if not is_ignored(path):
                    found.add(path.relative_to(root).as_posix())
    return sorted(found)


def input_hash(spec: ImageSpec, inputs: BuildInputs, *, base_hash: str | None) -> str:
    """Return the hash of everything that goes into image ``spec``."""
    digest = hashlib.sha256()

    def feed(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    files = context_files(inputs.project_root, (spec.containerfile, *spec.sources))
    feed("format", str(_HASH_FORMAT).encode())
    feed("reference", spec.reference.encode())
    feed("containerfile", (inputs.project_root / spec.containerfile).read_bytes())
    for rel in files:
        path = inputs.project_root / rel
        executable = os.stat(path).st_mode & stat.S_IXUSR
        feed(f"file {rel} {'x' if executable else '-'}", path.read_bytes())
    if spec.base is not None:
        if base_hash is None:
            raise ValueError(f"image {spec.name} needs the hash of {spec.base}")
        feed("base", base_hash.encode())
    if spec.wheels:
        feed("wheelhouse", inputs.wheelhouse_key.encode())
    if spec.rootfs:
        feed("rootfs", inputs.rootfs_key.encode())
    if spec.catatonit:
        feed("catatonit", _static_binary(inputs.catatonit).read_bytes())
    return digest.hexdigest()


def input_hashes(names: Iterable[str], inputs: BuildInputs) -> dict[str, str]:
    """Return the input hash of each image in ``names`` and of their bases."""
    hashes: dict[str, str] = {}
    for name in resolve(names):
        spec = inputs.specs[name]
        base_hash = hashes[spec.base] if spec.base is not None else None
        hashes[name] = input_hash(spec, inputs, base_hash=base_hash)
    return hashes


# --- the root file system ----------------------------------------------------


def debian_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """Return the Debian mirror apt uses here, from ``sources.list`` and ``.sources``.

    ``$HARNESS_DEBIAN_MIRROR`` wins when set. Returns an empty string when apt
    has no Debian entry; building the root file system then fails and says so.
    """
    explicit = os.environ.get("HARNESS_DEBIAN_MIRROR", "").strip()
    if explicit:
        return explicit
    files = [apt_dir / "sources.list"]
    files += sorted((apt_dir / "sources.list.d").glob("*.list"))
    files += sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        deb822 = path.suffix == ".sources"
        found = _deb822_mirror(text) if deb822 else _one_line_mirror(text)
        if found:
            return found
    return ""


def _is_main_suite(suite: str) -> bool:
    # bookworm, not bookworm-updates, bookworm-security or bookworm/updates.
    return "/" not in suite and "-" not in suite


def _is_debian_archive(uri: str) -> bool:
    return uri.rstrip("/").endswith("/debian")


def _one_line_mirror(text: str) -> str:
    for line in text.splitlines():
        line = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0])
        words = line.split()
        if (
            len(words) >= 4
            and words[0] == "deb"
            and _is_main_suite(words[2])
            and _is_debian_archive(words[1])
        ):
            return words[1]
    return ""


def _deb822_mirror(text: str) -> str:
    for stanza in text.split("\n\n"):
        entries: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, value = line.split(":", 1)
            entries[key.strip().lower()] = value.strip()
        if "deb" not in entries.get("types", "").split():
            continue
        uris = entries.get("uris", "").split()
        suites = entries.get("suites", "").split()
        for uri in uris:
            if _is_debian_archive(uri) and any(_is_main_suite(s) for s in suites):
                return uri
    return ""


def rootfs_path(recipe: RootfsRecipe) -> Path:
    """Return where the root file system of ``recipe`` is cached as a tar."""
    return cache_dir() / "rootfs" / f"rootfs-{recipe.key}.tar"


def ensure_rootfs(recipe: RootfsRecipe, *, progress: Progress) -> Path:
    """Return the cached root file system tar, making it with debootstrap if needed."""
    final = rootfs_path(recipe)
    if final.exists():
        logger.debug("root file system %s is cached", final.name)
        return final
    if not recipe.mirror:
        raise BuildError(
            "no Debian mirror found in /etc/apt/sources.list*; add the mirror apt "
            "should use, or set HARNESS_DEBIAN_MIRROR to its URL"
        )
    commands.require_root(why="debootstrap makes device nodes and changes owners")
    debootstrap = commands.require("debootstrap", package="debootstrap")
    final.parent.mkdir(parents=True, exist_ok=True)
    work = final.parent / f"build-{recipe.key}"
    log = final.parent / f"rootfs-{recipe.key}.log"
    commands.remove_tree(work)
    log.unlink(missing_ok=True)
    target = work / "root"
    target.mkdir(parents=True)
    try:
        with progress.step(f"debootstrap {recipe.suite} from {recipe.mirror}"):
            commands.run(
                [debootstrap, *recipe.debootstrap_args(target)],
                timeout=_DEBOOTSTRAP_TIMEOUT,
                log_file=log,
            )
            # debootstrap mounts /proc and /sys in the target while it works.
            commands.unmount_under(target)
        with progress.step("trim the root file system and tar it"):
            commands.run(
                ["chroot", target, "/bin/sh", "-c", recipe.trim_script()],
                timeout=600.0,
                log_file=log,
            )
            partial = work / "rootfs.tar"
            # The runtime mounts /dev, /proc and /sys; their contents stay out.
            tar = [
                "tar", "--create", f"--file={partial}", "--numeric-owner",
                "--xattrs", f"--directory={target}", "--exclude=./dev/*",
                "--exclude=./proc/*", "--exclude=./sys/*", "--exclude=./run/*",
                "--exclude=./tmp/*", ".",
            ]  # fmt: skip
            commands.run(tar, timeout=600.0, log_file=log)
            partial.rename(final)
    finally:
        commands.remove_tree(work)
    logger.info("root file system %s: %d MB", final.name, final.stat().st_size // 10**6)
    return final


# --- the wheelhouse ------------------------------------------------------------

_PIP_PLATFORM = (
    "--only-binary=:all:",
    "--platform", "manylinux2014_x86_64",
    "--python-version", "3.11",
    "--implementation", "cp",
    "--abi", "cp311",
)  # fmt: skip


def wheelhouse_key(requirements: Path) -> str:
    """Return a short hash of what a wheelhouse holds: requirements and pip's args."""
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(" ".join(_PIP_PLATFORM).encode())
    return digest.hexdigest()[:16]


def wheelhouse_path(requirements: Path) -> Path:
    """Return where the wheels for ``requirements`` are kept."""
    return cache_dir() / "wheels" / wheelhouse_key(requirements)


def ensure_wheelhouse(
    requirements: Path, *, progress: Progress, python: str = sys.executable
) -> Path:
    """Return the folder of wheels for ``requirements``, downloading it once.

    The wheels are for CPython 3.11 on manylinux2014_x86_64 (Debian
    bookworm's python3), pip's own wheel included, so that a build installs
    them with ``--no-index`` and no network.
    """
    final = wheelhouse_path(requirements)
    if (final / ".complete").exists():
        logger.debug("wheelhouse %s is cached", final.name)
        return final
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with progress.step(f"download the wheels of {requirements.name}"):
        commands.run(
            [
                python, "-m", "pip", "download", "--quiet",
                "--disable-pip-version-check", *_PIP_PLATFORM,
                "--dest", partial, "--requirement", requirements, "pip",
            ],
            timeout=_PIP_TIMEOUT,
        )  # fmt: skip
    if not list(partial.glob("pip-*.whl")):
        raise BuildError(f"pip download left no pip wheel in {partial}; run it again")
    (partial / ".complete").write_text(requirements.read_text())
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


# --- archives ---------------------------------------------------------------


def _archive_json(archive: tarfile.TarFile, name: str) -> Any:
    try:
        member = archive.extractfile(name)
    except KeyError:
        member = None
    if member is None:
        raise BuildError(
            f"{archive.name!s} has no file {name}; rebuild the image with --force"
        )
    return json.load(member)


def _blob(digest: str) -> str:
    algorithm, value = digest.split(":", 1)
    return f"blobs/{algorithm}/{value}"


def _manifest(archive: tarfile.TarFile) -> Any:
    index = _archive_json(archive, "index.json")
    return _archive_json(archive, _blob(index["manifests"][0]["digest"]))


def image_config(archive_path: Path) -> dict[str, Any]:
    """Return the OCI image config (``config``, ``rootfs``, ...) in an archive."""
    with tarfile.open(archive_path) as archive:
        manifest = _manifest(archive)
        config: dict[str, Any] = _archive_json(
            archive, _blob(manifest["config"]["digest"])
        )
        return config


def archive_reference(archive_path: Path) -> str:
    """Return the reference an OCI archive names its image by."""
    with tarfile.open(archive_path) as archive:
        index = _archive_json(archive, "index.json")
    ref: str = (
        index["manifests"][0]
        .get("annotations", {})
        .get("org.opencontainers.image.ref.name", "")
    )
    return ref


def image_size(archive_path: Path) -> int:
    """Return the uncompressed size of the image in an archive: all its layers.

    Each layer is read through to its end, so the figure is what the layers
    unpack from, whatever compression the archive uses.
    """
    total = 0
    with tarfile.open(archive_path) as archive:
        for layer in _manifest(archive)["layers"]:
            member = archive.extractfile(_blob(layer["digest"]))
            if member is None:
                raise BuildError(f"{archive_path} lacks layer {layer['digest']}")
            media_type = layer["mediaType"]
            if media_type.endswith("+gzip"):
                stream: Any = gzip.GzipFile(fileobj=member)
            elif media_type.endswith(".tar") or media_type.endswith("tar"):
                stream = member
            else:
                raise BuildError(
                    f"{archive_path}: layer media type {media_type} is not tar or "
                    "gzip; rebuild the image with --force"
                )
            while chunk := stream.read(1 << 20):
                total += len(chunk)
    return total


# --- buildah ------------------------------------------------------------------


@dataclass(frozen=True)
class Buildah:
    """The buildah command on a storage of our own inside the cache.

    Every call runs in a new network namespace where no interface is up, so
    a build step cannot reach any address, and the machine's default image
    storage stays untouched.

    TODO: buildah 1.28 still writes its blob-info cache (a few kB of layer
    digests) to /var/lib/containers/cache when run as root; no flag moves it.
    """

    storage: Path

    def command(self, *args: str | os.PathLike[str]) -> list[str | os.PathLike[str]]:
        """Return the command line of ``buildah ARGS`` on our storage."""
        return [
            commands.require("unshare", package="util-linux"), "--net", "--",
            commands.require("buildah", package="buildah"),
            "--root", self.storage / "root",
            "--runroot", self.storage / "run",
            "--storage-driver", "overlay",
            *args,
        ]  # fmt: skip

    @property
    def env(self) -> dict[str, str]:
        """Return the environment buildah runs with: temporary files in the cache."""
        tmp = self.storage / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return {**os.environ, "TMPDIR": str(tmp)}

    def run(
        self,
        *args: str | os.PathLike[str],
        timeout: float,
        log_file: Path | None = None,
    ) -> commands.Completed:
        """Run ``buildah ARGS`` on our storage."""
        return commands.run(
            self.command(*args), timeout=timeout, env=self.env, log_file=log_file
        )

    def image_label(self, ref: str, label: str) -> str | None:
        """Return a label of image ``ref`` in our storage, None if it is absent."""
        done = commands.run(
            self.command("inspect", "--type", "image", ref),
            timeout=60.0,
            env=self.env,
            check=False,
        )
        if done.returncode != 0:
            return None
        labels = json.loads(done.stdout)["OCIv1"]["config"].get("Labels") or {}
        value = labels.get(label)
        return str(value) if value is not None else None

    def release(self) -> None:
        """Unmount what buildah left mounted in its storage."""
        if not self.storage.exists():
            return
        commands.run(
            self.command("umount", "--all"), timeout=120.0, env=self.env, check=False
        )
        commands.unmount_under(self.storage)


def storage_path() -> Path:
    """Return the folder of the harness's own buildah storage."""
    return cache_dir() / "buildah"


def reset_storage() -> None:
    """Delete the buildah storage, so that the next build starts cold."""
    with _locked():
        commands.remove_tree(storage_path())


# --- building -----------------------------------------------------------------


def _static_binary(path: Path) -> Path:
    """Return ``path`` if it is a statically linked ELF executable."""
    if not path.is_file():
        raise PrerequisiteError(
            f"{path} not found; install the Debian package catatonit"
        )
    with path.open("rb") as binary:
        header = binary.read(64)
        if header[:5] != b"\x7fELF\x02":
            raise BuildError(f"{path} is not a 64-bit ELF executable; reinstall it")
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        binary.seek(phoff)
        table = binary.read(phentsize * phnum)
    for i in range(phnum):
        (p_type,) = struct.unpack_from("<I", table, i * phentsize)
        if p_type == 3:  # PT_INTERP: it needs a dynamic loader
            raise BuildError(
                f"{path} is dynamically linked, and a pause image has no libraries; "
                "install Debian's catatonit, which is static"
            )
    return path


def stage_context(
    spec: ImageSpec,
    inputs: BuildInputs,
    dest: Path,
    *,
    wheelhouse: Path | None = None,
    rootfs: Path | None = None,
) -> Path:
    """Lay out the build context of ``spec`` in ``dest`` and return it.

    The context mirrors the checkout (``services/...``) with only the files
    the image copies, plus ``wheels/``, ``rootfs.tar`` or ``catatonit`` when
    the image needs them, so a build never sees the rest of the project.
    """
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for rel in context_files(inputs.project_root, (*spec.sources, spec.containerfile)):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(inputs.project_root / rel, target)
    if spec.wheels:
        if wheelhouse is None:
            raise ValueError(f"image {spec.name} needs the wheelhouse")
        hidden = shutil.ignore_patterns(".*")
        shutil.copytree(wheelhouse, dest / "wheels", ignore=hidden)
    if spec.rootfs:
        if rootfs is None:
            raise ValueError(f"image {spec.name} needs the root file system")
        _link_or_copy(rootfs, dest / "rootfs.tar")
    if spec.catatonit:
        shutil.copy2(_static_binary(inputs.catatonit), dest / "catatonit")
        (dest / "catatonit").chmod(0o755)
    return dest


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _manifest_path(name: str) -> Path:
    return images_dir() / f"{name}.json"


def _read_built(name: str) -> BuiltImage | None:
    path = _manifest_path(name)
    try:
        data = json.loads(path.read_text())
        image = BuiltImage(
            name=name,
            reference=data["reference"],
            archive=images_dir() / data["archive"],
            size_bytes=int(data["size_bytes"]),
            input_hash=data["input_hash"],
            built_at=data["built_at"],
            cached=True,
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return image if image.archive.is_file() else None


def _write_built(image: BuiltImage) -> None:
    data = {
        "reference": image.reference,
        "input_hash": image.input_hash,
        "size_bytes": image.size_bytes,
        "built_at": image.built_at,
        "archive": image.archive.name,
    }
    partial = _manifest_path(image.name).with_suffix(".json.partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    partial.rename(_manifest_path(image.name))


def list_built() -> list[BuiltImage]:
    """Return the images whose archives are in the cache, in build order."""
    found = (_read_built(name) for name in IMAGE_NAMES)
    return [image for image in found if image is not None]


@contextmanager
def _locked() -> Iterator[None]:
    """Hold the cache's image lock, so that two builds never share a storage."""
    images_dir().mkdir(parents=True, exist_ok=True)
    path = images_dir() / ".lock"
    with path.open("w") as lock:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BuildError(
                        f"{path} is still held by another image build after "
                        f"{_LOCK_TIMEOUT:g}s; wait for it to end"
                    ) from None
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build(
    *,
    names: Sequence[str] | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> list[BuiltImage]:
    """Build the images ``names`` (all if None) and the bases they need.

    An image whose input hash did not change and whose archive is in the
    cache is not built again, unless ``force``. Returns every image of the
    run, built or cached, in build order.
    """
    wanted = resolve(names)
    inputs = BuildInputs.current()
    requested = set(wanted if names is None else names)
    with _locked():
        hashes = input_hashes(wanted, inputs)
        previous = {name: _read_built(name) for name in wanted}
        to_build = [
            name
            for name in wanted
            if (force and name in requested)
            or not _is_current(previous[name], hashes[name])
        ]
        if not to_build:
            if progress is not None:
                progress.note(f"all {len(wanted)} images are up to date")
            return [image for name in wanted if (image := previous[name])]

        commands.require_root(why="buildah builds root file systems as root here")
        commands.require("buildah", package="buildah")
        commands.require("unshare", package="util-linux")
        recipe = RootfsRecipe(mirror=debian_mirror())
        requirements = inputs.project_root / "services/requirements.txt"
        steps = len(to_build)
        if "base" in to_build and not rootfs_path(recipe).exists():
            commands.require("debootstrap", package="debootstrap")
            steps += 2  # debootstrap, then trimming
        needs_wheels = any(inputs.specs[n].wheels for n in to_build)
        if needs_wheels and not (wheelhouse_path(requirements) / ".complete").exists():
            steps += 1
        if progress is None:
            progress = Progress("images", total=steps)

        buildah = Buildah(storage_path())
        results: list[BuiltImage] = []
        try:
            for name in wanted:
                if name not in to_build:
                    cached = previous[name]
                    assert cached is not None
                    results.append(cached)
                    continue
                spec = inputs.specs[name]
                rootfs = wheelhouse = None
                if spec.rootfs:
                    rootfs = ensure_rootfs(recipe, progress=progress)
                if spec.wheels:
                    wheelhouse = ensure_wheelhouse(requirements, progress=progress)
                with progress.step(f"build {spec.reference}"):
                    image = _build_one(
                        spec,
                        inputs,
                        buildah,
                        input_hash=hashes[name],
                        no_cache=force and name in requested,
                        wheelhouse=wheelhouse,
                        rootfs=rootfs,
                        base_hash=hashes[spec.base] if spec.base else None,
                    )
                results.append(image)
                logger.info(
                    "image %s: %d MB in %s", image.reference,
                    image.size_bytes // 10**6, image.archive,
                )  # fmt: skip
        finally:
            buildah.release()
        return results


def _is_current(image: BuiltImage | None, expected_hash: str) -> bool:
    return image is not None and image.input_hash == expected_hash


def _build_one(
    spec: ImageSpec,
    inputs: BuildInputs,
    buildah: Buildah,
    *,
    input_hash: str,
    no_cache: bool,
    wheelhouse: Path | None,
    rootfs: Path | None,
    base_hash: str | None,
) -> BuiltImage:
    out = images_dir()
    logs = cache_dir() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"image-{spec.name}.log"
    log.unlink(missing_ok=True)

    # A base built in an earlier run may be missing from a fresh storage, or
    # be another build of it: load the archive we trust.
    if spec.base is not None:
        _load_base(buildah, spec.base, base_hash, log=log)

    context = stage_context(
        spec,
        inputs,
        cache_dir() / "contexts" / spec.name,
        wheelhouse=wheelhouse,
        rootfs=rootfs,
    )
    archive = out / f"{spec.name}-{input_hash[:16]}.tar"
    partial = archive.with_suffix(".tar.partial")
    partial.unlink(missing_ok=True)
    try:
        buildah.run(
            "bud", "--isolation", "chroot", "--layers", "--pull=never",
            "--force-rm", *(["--no-cache"] if no_cache else []),
            "--label", f"{HASH_LABEL}={input_hash}",
            "--file", context / spec.containerfile,
            "--tag", spec.reference,
            context,
            timeout=_BUILD_TIMEOUT,
            log_file=log,
        )  # fmt: skip
        buildah.run(
            "push", "--quiet", spec.reference,
            f"oci-archive:{partial}:{spec.reference}",
            timeout=_ARCHIVE_TIMEOUT,
            log_file=log,
        )  # fmt: skip
    except CommandError as e:
        partial.unlink(missing_ok=True)
        raise BuildError(
            f"building image {spec.reference} failed (full log: {log}): {e}"
        ) from e
    finally:
        shutil.rmtree(context, ignore_errors=True)
    partial.rename(archive)
    for old in out.glob(f"{spec.name}-*.tar"):
        if old != archive:
            old.unlink()
    image = BuiltImage(
        name=spec.name,
        reference=spec.reference,
        archive=archive,
        size_bytes=image_size(archive),
        input_hash=input_hash,
        built_at=datetime.now(UTC).isoformat(timespec="seconds"),
        cached=False,
    )
    _write_built(image)
    return image


def _load_base(
    buildah: Buildah, name: str, base_hash: str | None, *, log: Path
) -> None:
    ref = reference(name)
    if base_hash is not None and buildah.image_label(ref, HASH_LABEL) == base_hash:
        return
    built = _read_built(name)
    if built is None or built.input_hash != base_hash:
        raise BuildError(
            f"image {ref} is not built for this checkout; build it first "
            f"(harness images build {name})"
        )
    logger.debug("loading %s into the buildah storage from %s", ref, built.archive)
    buildah.run(
        "pull", "--quiet", f"oci-archive:{built.archive}", timeout=600.0, log_file=log
    )
