"""Tests of harness.imaging: input hashes, caches, archives, and a real build."""

import gzip
import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import IO

import pytest

from harness import commands, imaging
from harness.errors import BuildError, CommandError, UsageError
from harness.paths import PROJECT_ROOT
from harness.progress import Progress

QUIET = Progress("test", quiet=True)

# --- a small project of our own, to change files in --------------------------


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """Lay out a project with every file the image specs copy."""
    root = tmp_path / "project"
    files = {
        "services/__init__.py": "",
        "services/requirements.txt": "quart==0.22.0\n",
        "services/kit/__init__.py": "KIT = 1\n",
        "services/base/Containerfile": "FROM scratch\nADD rootfs.tar /\n",
        "services/apache/Containerfile": "FROM base\n",
        "services/apache/httpd.conf": "Listen 8080\n",
        "harness/images/pause/Containerfile": "FROM scratch\n",
        "tests/test_catalog.py": "def test(): pass\n",
    }
    for name in imaging.SERVICES:
        files[f"services/{name}/Containerfile"] = f"FROM base\n# {name}\n"
        files[f"services/{name}/__main__.py"] = f"print({name!r})\n"
    for rel, text in files.items():
        _write(root, rel, text)
    return root


def _inputs(
    root: Path, *, rootfs_key: str = "rootfs-1", wheelhouse_key: str = "wheels-1"
) -> imaging.BuildInputs:
    return imaging.BuildInputs(
        project_root=root, rootfs_key=rootfs_key, wheelhouse_key=wheelhouse_key
    )


def _hashes(
    root: Path, *, rootfs_key: str = "rootfs-1", wheelhouse_key: str = "wheels-1"
) -> dict[str, str]:
    images = [n for n in imaging.IMAGE_NAMES if n != "pause"]
    inputs = _inputs(root, rootfs_key=rootfs_key, wheelhouse_key=wheelhouse_key)
    return imaging.input_hashes(images, inputs)


@pytest.mark.parametrize(
    ("rel", "changed"),
    [
        pytest.param("services/catalog/__main__.py", {"catalog"}, id="own-code"),
        pytest.param("services/catalog/Containerfile", {"catalog"}, id="containerfile"),
        pytest.param(
            "services/kit/__init__.py", set(imaging.SERVICES), id="shared-kit"
        ),
        pytest.param(
            "services/requirements.txt", set(imaging.SERVICES), id="requirements"
        ),
        pytest.param("services/apache/httpd.conf", {"apache"}, id="httpd-conf"),
        pytest.param("services/catalog/new_module.py", {"catalog"}, id="new-file"),
    ],
)
def test_changing_a_copied_file_changes_the_hash_of_the_images_that_copy_it(
    project: Path, rel: str, changed: set[str]
) -> None:
    before = _hashes(project)
    _write(project, rel, "changed = True\n")
    after = _hashes(project)
    assert {name for name in before if before[name] != after[name]} == changed


@pytest.mark.parametrize(
    "rel",
    [
        pytest.param("tests/test_catalog.py", id="a-test"),
        pytest.param("services/catalog/__pycache__/app.cpython-311.pyc", id="bytecode"),
        pytest.param("services/kit/.mypy_cache/x.json", id="tool-cache"),
        pytest.param("README.md", id="project-file"),
    ],
)
def test_a_file_no_image_copies_leaves_every_hash_alone(
    project: Path, rel: str
) -> None:
    before = _hashes(project)
    _write(project, rel, "anything\n")
    assert _hashes(project) == before


def test_making_a_copied_file_executable_changes_the_hash(project: Path) -> None:
    before = _hashes(project)
    (project / "services/apache/httpd.conf").chmod(0o755)
    after = _hashes(project)
    assert before["apache"] != after["apache"]
    assert before["catalog"] == after["catalog"]


@pytest.mark.parametrize(
    "change", [pytest.param("rootfs-recipe"), pytest.param("base-containerfile")]
)
def test_a_change_to_the_base_changes_every_image_built_on_it(
    project: Path, change: str
) -> None:
    before = _hashes(project)
    if change == "rootfs-recipe":
        after = _hashes(project, rootfs_key="rootfs-2")
    else:
        _write(project, "services/base/Containerfile", "FROM scratch\nUSER 1\n")
        after = _hashes(project)
    on_base = {n for n, spec in imaging.SPECS.items() if spec.base == "base"}
    assert {n for n in before if before[n] != after[n]} == {"base"} | on_base


def test_a_new_wheelhouse_changes_the_services_only(project: Path) -> None:
    before = _hashes(project)
    after = _hashes(project, wheelhouse_key="wheels-2")
    assert {n for n in before if before[n] != after[n]} == set(imaging.SERVICES)


def test_a_missing_copied_folder_is_a_build_error_naming_it(project: Path) -> None:
    shutil.rmtree(project / "services/order")
    with pytest.raises(BuildError, match="services/order"):
        _hashes(project)


def test_wheelhouse_key_follows_the_requirements(tmp_path: Path) -> None:
    first = tmp_path / "a.txt"
    second = tmp_path / "b.txt"
    first.write_text("quart==0.22.0\n")
    second.write_text("quart==0.22.0\n")
    assert imaging.wheelhouse_key(first) == imaging.wheelhouse_key(second)
    second.write_text("quart==0.21.0\n")
    assert imaging.wheelhouse_key(first) != imaging.wheelhouse_key(second)


# --- names -------------------------------------------------------------------


def test_an_unknown_image_name_is_a_usage_error_naming_it() -> None:
    with pytest.raises(UsageError, match="'catalogue' is not one of ours"):
        imaging.resolve(["catalogue"])


def test_an_unknown_image_name_fails_before_anything_is_built(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UsageError, match="catalogue"):
        imaging.build(names=["catalog", "catalogue"], progress=QUIET)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        pytest.param(["order"], ["base", "order"], id="service-needs-base"),
        pytest.param(["apache", "catalog"], ["base", "catalog", "apache"], id="order"),
        pytest.param(["pause"], ["pause"], id="pause-stands-alone"),
        pytest.param(None, list(imaging.IMAGE_NAMES), id="all"),
    ],
)
def test_resolve_puts_each_base_before_its_users(
    names: list[str] | None, expected: list[str]
) -> None:
    assert imaging.resolve(names) == expected


def test_references_use_the_project_repository_and_version() -> None:
    assert imaging.reference("catalog") == "localhost/kube-harness/catalog:0.1.0"


# --- the wheelhouse and the Debian mirror ---------------------------------------


def test_a_complete_wheelhouse_is_reused_without_running_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("quart==0.22.0\n")
    kept = imaging.wheelhouse_path(requirements)
    kept.mkdir(parents=True)
    (kept / "pip-25.0-py3-none-any.whl").write_bytes(b"wheel")
    (kept / ".complete").write_text("")
    # A python that cannot run proves that nothing was downloaded.
    found = imaging.ensure_wheelhouse(
        requirements, progress=QUIET, python=str(tmp_path / "no-python")
    )
    assert found == kept
    assert (found / "pip-25.0-py3-none-any.whl").read_bytes() == b"wheel"


def test_an_unfinished_wheelhouse_is_downloaded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("quart==0.22.0\n")
    imaging.wheelhouse_path(requirements).mkdir(parents=True)
    with pytest.raises(CommandError, match="no-python"):
        imaging.ensure_wheelhouse(
            requirements, progress=QUIET, python=str(tmp_path / "no-python")
        )


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {
                "sources.list.d/debian.sources": (
                    "Types: deb\nURIs: http://deb.example.org/debian\n"
                    "Suites: bookworm bookworm-updates\nComponents: main\n\n"
                    "Types: deb\nURIs: http://deb.example.org/debian-security\n"
                    "Suites: bookworm-security\nComponents: main\n"
                )
            },
            "http://deb.example.org/debian",
            id="deb822",
        ),
        pytest.param(
            {
                "sources.list": (
                    "# deb http://old.example.org/debian bookworm main\n"
                    "deb http://security.example.org/debian-security "
                    "bookworm-security main\n"
                    "deb [arch=amd64 signed-by=/k.gpg] http://m.example.org/debian "
                    "bookworm main\n"
                )
            },
            "http://m.example.org/debian",
            id="one-line-with-options",
        ),
        pytest.param(
            {
                "sources.list": "",
                "sources.list.d/other.list": (
                    "deb https://packages.example.com/apt stable main\n"
                ),
            },
            "",
            id="no-debian-entry",
        ),
    ],
)
def test_the_debian_mirror_is_the_one_apt_uses(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    expected: str,
) -> None:
    monkeypatch.delenv("HARNESS_DEBIAN_MIRROR", raising=False)
    for rel, text in files.items():
        _write(tmp_path, rel, text)
    assert imaging.debian_mirror(tmp_path) == expected


def test_the_rootfs_key_changes_with_the_mirror_and_the_packages() -> None:
    recipe = imaging.RootfsRecipe(mirror="http://a.example.org/debian")
    keys = {
        recipe.key,
        imaging.RootfsRecipe(mirror="http://b.example.org/debian").key,
        imaging.RootfsRecipe(mirror=recipe.mirror, packages=("python3",)).key,
        imaging.RootfsRecipe(mirror=recipe.mirror, trim_version=99).key,
    }
    assert len(keys) == 4
    assert imaging.RootfsRecipe(mirror=recipe.mirror).key == recipe.key


# --- archives ----------------------------------------------------------------


def _blob(archive: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))
    return f"sha256:{digest}"


def _layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as layer:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            layer.addfile(info, io.BytesIO(data))
    return out.getvalue()


@pytest.fixture
def oci_archive(tmp_path: Path) -> tuple[Path, int]:
    """Write an OCI archive with a gzip layer and a plain one; return it and size."""
    gzip_layer = _layer({"usr/bin/tool": b"compressible " * 30_000})
    plain_layer = _layer({"app/main.py": b"print('hi')\n" * 1000})
    path = tmp_path / "image.tar"
    with tarfile.open(path, "w") as archive:
        config = json.dumps({"config": {"User": "10001:10001", "Cmd": ["x"]}})
        manifest = {
            "schemaVersion": 2,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _blob(archive, config.encode()),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _blob(archive, gzip.compress(gzip_layer)),
                },
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _blob(archive, plain_layer),
                },
            ],
        }
        index = {
            "schemaVersion": 2,
            "manifests": [
                {
                    "digest": _blob(archive, json.dumps(manifest).encode()),
                    "annotations": {"org.opencontainers.image.ref.name": "x/y:1"},
                }
            ],
        }
        data = json.dumps(index).encode()
        info = tarfile.TarInfo("index.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return path, len(gzip_layer) + len(plain_layer)


def test_image_size_is_the_sum_of_the_uncompressed_layers(
    oci_archive: tuple[Path, int],
) -> None:
    path, expected = oci_archive
    assert imaging.image_size(path) == expected
    assert path.stat().st_size < expected  # the gzip layer really was compressed


def test_image_config_and_reference_are_read_from_the_archive(
    oci_archive: tuple[Path, int],
) -> None:
    path, _ = oci_archive
    assert imaging.image_config(path)["config"]["User"] == "10001:10001"
    assert imaging.archive_reference(path) == "x/y:1"


def test_a_file_that_is_no_oci_archive_is_a_build_error(tmp_path: Path) -> None:
    path = tmp_path / "not-oci.tar"
    with tarfile.open(path, "w") as archive:
        archive.add(__file__, arcname="something.py")
    with pytest.raises(BuildError, match=r"index\.json"):
        imaging.image_size(path)


# --- the pause image's binary ---------------------------------------------------


def test_a_dynamically_linked_binary_is_refused_for_the_pause_image(
    tmp_path: Path,
) -> None:
    with pytest.raises(BuildError, match="dynamically linked"):
        imaging.stage_context(
            imaging.SPECS["pause"],
            imaging.BuildInputs(
                project_root=PROJECT_ROOT,
                rootfs_key="r",
                wheelhouse_key="w",
                catatonit=Path(os.path.realpath("/bin/sh")),
            ),
            tmp_path / "ctx",
        )


@pytest.mark.skipif(not imaging.CATATONIT.exists(), reason="catatonit not installed")
def test_the_pause_context_holds_only_catatonit_and_its_containerfile(
    tmp_path: Path,
) -> None:
    inputs = imaging.BuildInputs(
        project_root=PROJECT_ROOT, rootfs_key="r", wheelhouse_key="w"
    )
    context = imaging.stage_context(imaging.SPECS["pause"], inputs, tmp_path / "ctx")
    files = sorted(
        p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()
    )
    assert files == ["catatonit", "harness/images/pause/Containerfile"]
    assert os.access(context / "catatonit", os.X_OK)


def test_a_service_context_holds_its_own_code_and_no_other_service(
    tmp_path: Path, project: Path
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "pip-25.0-py3-none-any.whl").write_bytes(b"pip")
    (wheels / ".complete").write_text("")
    _write(project, "services/catalog/__pycache__/x.cpython-311.pyc", "")
    context = imaging.stage_context(
        imaging.SPECS["catalog"], _inputs(project), tmp_path / "ctx", wheelhouse=wheels
    )
    files = sorted(
        p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()
    )
    assert files == [
        "services/__init__.py",
        "services/catalog/Containerfile",
        "services/catalog/__main__.py",
        "services/kit/__init__.py",
        "services/requirements.txt",
        "wheels/pip-25.0-py3-none-any.whl",
    ]


# --- a real build ---------------------------------------------------------------


def require_build_tools() -> None:
    """Skip when the build tools cannot be installed here; fail when they can."""
    if os.geteuid() != 0:
        pytest.skip("building images needs root (debootstrap and buildah run as root)")
    missing = [t for t in ("buildah", "debootstrap") if shutil.which(t) is None]
    if missing and shutil.which("apt-get") is None:
        pytest.skip(f"{', '.join(missing)} missing and no apt-get to install them")
    if missing:
        pytest.fail(f"{', '.join(missing)} missing; install them with make system")


@pytest.fixture(scope="session")
def built_images() -> dict[str, imaging.BuiltImage]:
    """Build every image once per session (cached builds take a second)."""
    require_build_tools()
    images = imaging.build(progress=Progress("test images", quiet=True))
    return {image.name: image for image in images}


@pytest.mark.images
def test_every_image_has_an_archive_in_the_cache(
    built_images: dict[str, imaging.BuiltImage],
) -> None:
    assert set(built_images) == set(imaging.IMAGE_NAMES)
    for name, image in built_images.items():
        assert image.archive.is_file()
        assert image.reference == imaging.reference(name)
        assert imaging.archive_reference(image.archive) == image.reference
        assert image.size_bytes == imaging.image_size(image.archive)


@pytest.mark.images
@pytest.mark.parametrize("name", [*imaging.SERVICES, "apache"])
def test_each_service_image_is_under_250_mb_uncompressed(
    built_images: dict[str, imaging.BuiltImage], name: str
) -> None:
    assert 50 * 10**6 < built_images[name].size_bytes < 250 * 10**6


@pytest.mark.images
def test_a_second_build_finds_every_image_cached(
    built_images: dict[str, imaging.BuiltImage],
) -> None:
    again = imaging.build(progress=Progress("test images", quiet=True))
    assert [image.name for image in again] == list(imaging.IMAGE_NAMES)
    assert all(image.cached for image in again)
    assert {i.name: i.archive for i in again} == {
        n: i.archive for n, i in built_images.items()
    }


@pytest.mark.images
def test_a_build_leaves_nothing_mounted_in_its_storage(
    built_images: dict[str, imaging.BuiltImage],
) -> None:
    assert commands.mount_points_under(imaging.storage_path()) == []


@pytest.mark.images
@pytest.mark.parametrize(
    ("name", "user", "entrypoint", "cmd"),
    [
        pytest.param(
            service, "10001:10001", None, ["python3", "-m", f"services.{service}"],
            id=service,
        )
        for service in imaging.SERVICES
    ]
    + [
        pytest.param(
            "apache", "10001:10001", None, ["/etc/kube-harness/entrypoint.sh"],
            id="apache",
        ),
        pytest.param("pause", "65535:65535", ["/catatonit", "-P"], None, id="pause"),
        pytest.param("base", "10001:10001", None, ["python3"], id="base"),
    ],
)  # fmt: skip
def test_image_config_runs_the_expected_command_as_a_non_root_user(
    built_images: dict[str, imaging.BuiltImage],
    name: str,
    user: str,
    entrypoint: list[str] | None,
    cmd: list[str] | None,
) -> None:
    config = imaging.image_config(built_images[name].archive)["config"]
    assert config["User"] == user
    assert config.get("Entrypoint") == entrypoint
    assert config.get("Cmd") == cmd
    assert config["Labels"][imaging.HASH_LABEL] == built_images[name].input_hash


def _member(archive: tarfile.TarFile, digest: str) -> IO[bytes]:
    member = archive.extractfile("blobs/sha256/" + digest.removeprefix("sha256:"))
    assert member is not None
    return member


def _layer_names(archive_path: Path) -> set[str]:
    """Return the paths in an image's layers, those of its base aside."""
    names: set[str] = set()
    with tarfile.open(archive_path) as archive:
        index_file = archive.extractfile("index.json")
        assert index_file is not None
        index = json.load(index_file)
        manifest = json.load(_member(archive, index["manifests"][0]["digest"]))
        for layer in manifest["layers"][1:]:
            blob = _member(archive, layer["digest"])
            with tarfile.open(fileobj=blob, mode="r:*") as files:
                names.update(files.getnames())
    return names


@pytest.mark.images
def test_a_service_image_has_bytecode_and_no_wheels(
    built_images: dict[str, imaging.BuiltImage],
) -> None:
    names = _layer_names(built_images["catalog"].archive)
    assert not [n for n in names if n.endswith(".whl") or n.startswith("wheels")]
    app = "opt/kube-harness/app/services"
    assert f"{app}/catalog/__main__.py" in names
    assert any(n.startswith(f"{app}/catalog/__pycache__/") for n in names)
    assert any(n.startswith("opt/kube-harness/lib/quart/__pycache__/") for n in names)
    assert not any(n.startswith(f"{app}/customer") for n in names)
