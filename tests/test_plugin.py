"""Tests of the pytest plugin, run in inner pytest sessions with ``pytester``.

The plugin reaches the inner sessions the way it reaches every session: through
the ``pytest11`` entry point of the installed package.
"""

import json
import socket
from pathlib import Path
from typing import Any, cast

import pytest

from harness.plugin import DEFAULT_CATALOG_REPLICAS, DEFAULT_REQUESTS, EXIT_NOT_READY

pytest_plugins = ["pytester"]

DUMP_OPTIONS = """
import json
from pathlib import Path

def test_dump(harness_options):
    fields = {
        name: str(value) if isinstance(value, Path) else value
        for name, value in vars(harness_options).items()
    }
    Path("options.json").write_text(json.dumps(fields))
"""


def _options(pytester: pytest.Pytester, *args: str) -> dict[str, object]:
    pytester.makepyfile(test_dump=DUMP_OPTIONS)
    result = pytester.runpytest(*args)
    result.assert_outcomes(passed=1)
    loaded: dict[str, object] = json.loads(Path("options.json").read_text())
    return loaded


def test_a_run_that_never_mentions_the_harness_is_not_affected(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")

    result = pytester.runpytest()

    result.assert_outcomes(passed=1)


def test_the_options_are_shown_in_a_harness_group_of_the_help(
    pytester: pytest.Pytester,
) -> None:
    result = pytester.runpytest("--help")

    result.stdout.fnmatch_lines(
        [
            "kube-harness experiments:",
            "*--cluster={local,kind,k3d,minikube,existing}*",
            "*--catalog-replicas=N*",
        ]
    )


def test_defaults_are_a_local_cluster_and_a_fresh_namespace(
    pytester: pytest.Pytester,
) -> None:
    options = _options(pytester)

    assert options["cluster"] == "local"
    assert options["kubeconfig"] is None
    assert options["keep_cluster"] is False
    assert options["catalog_replicas"] == DEFAULT_CATALOG_REPLICAS
    assert options["requests"] == DEFAULT_REQUESTS
    assert options["report_dir"] == str(pytester.path / "reports")
    assert options["namespace_given"] is False
    namespace = str(options["namespace"])
    assert namespace.startswith("harness-")
    assert len(namespace) <= 63
    assert namespace == namespace.lower()


def test_given_options_are_carried_into_the_fixture(pytester: pytest.Pytester) -> None:
    kubeconfig = pytester.makefile(".yaml", kubeconfig="apiVersion: v1\n")

    options = _options(
        pytester,
        "--cluster=existing",
        f"--kubeconfig={kubeconfig.name}",
        "--namespace=shop-test",
        "--catalog-replicas=5",
        "--requests=6000",
        "--report-dir=out/reports",
    )

    assert options["cluster"] == "existing"
    assert options["kubeconfig"] == str(kubeconfig.resolve())
    assert options["namespace"] == "shop-test"
    assert options["namespace_given"] is True
    assert options["catalog_replicas"] == 5
    assert options["requests"] == 6000
    assert options["report_dir"] == str(pytester.path / "out" / "reports")


def test_keep_cluster_is_accepted_with_a_cluster_the_harness_starts(
    pytester: pytest.Pytester,
) -> None:
    options = _options(pytester, "--cluster=kind", "--keep-cluster")

    assert options["cluster"] == "kind"
    assert options["keep_cluster"] is True


def test_every_test_of_a_session_sees_the_same_namespace(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        test_first="from pathlib import Path\n"
        "def test_one(harness_options):\n"
        "    Path('first').write_text(harness_options.namespace)\n",
        test_second="from pathlib import Path\n"
        "def test_two(harness_options):\n"
        "    Path('second').write_text(harness_options.namespace)\n",
    )

    pytester.runpytest().assert_outcomes(passed=2)

    assert Path("first").read_text() == Path("second").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(
            ["--cluster=existing"],
            "--cluster existing needs --kubeconfig PATH*",
            id="existing-without-kubeconfig",
        ),
        pytest.param(
            ["--cluster=existing", "--kubeconfig=missing.yaml"],
            "--kubeconfig missing.yaml: no such file*",
            id="missing-kubeconfig",
        ),
        pytest.param(
            ["--kubeconfig=kubeconfig.yaml"],
            "--kubeconfig kubeconfig.yaml is only read with --cluster existing*",
            id="kubeconfig-with-a-local-cluster",
        ),
        pytest.param(
            ["--cluster=existing", "--kubeconfig=kubeconfig.yaml", "--keep-cluster"],
            "--keep-cluster has no effect with --cluster existing*",
            id="keep-an-existing-cluster",
        ),
        pytest.param(
            ["--namespace=Shop_Test"],
            "--namespace 'Shop_Test' is not a DNS-1123 label*",
            id="namespace-not-a-label",
        ),
        pytest.param(
            ["--namespace=" + "n" * 64],
            "--namespace 'nnnn*' is not a DNS-1123 label*",
            id="namespace-too-long",
        ),
        pytest.param(
            ["--namespace=kube-system"],
            "--namespace kube-system is a system namespace*",
            id="system-namespace",
        ),
        pytest.param(
            ["--catalog-replicas=0"],
            "--catalog-replicas 0 is below 1*",
            id="no-replicas",
        ),
        pytest.param(
            ["--requests=many"],
            "--requests 'many' is not a whole number",
            id="requests-not-a-number",
        ),
        pytest.param(
            ["--requests=99"],
            "--requests 99 is below 100*",
            id="too-few-requests",
        ),
        pytest.param(
            ["--requests=300", "--catalog-replicas=5"],
            "--requests 300 over --catalog-replicas 5 leaves 60 per replica*",
            id="too-few-requests-per-replica",
        ),
        pytest.param(
            ["--report-dir=kubeconfig.yaml"],
            "--report-dir */kubeconfig.yaml is a file; pass a directory",
            id="report-dir-is-a-file",
        ),
    ],
)
def test_bad_options_are_a_usage_error_naming_the_option(
    pytester: pytest.Pytester, args: list[str], message: str
) -> None:
    pytester.makefile(".yaml", kubeconfig="apiVersion: v1\n")
    pytester.makepyfile("def test_never_runs():\n    raise AssertionError\n")

    result = pytester.runpytest(*args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {message}"])


EXPERIMENTS = """
import pytest

def test_figures_are_kept(experiment):
    experiment.parameters["requests"] = 300
    experiment.statistics["p_value"] = 0.5

def test_a_broken_promise(experiment):
    experiment.statistics["max_min_ratio"] = float("inf")
    assert 1 + 1 == 3, "arithmetic broke"

def test_not_here(experiment):
    pytest.skip("needs three nodes")
"""


def _results(report_dir: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        (report_dir / "latest" / "results.json").read_text()
    )
    return loaded


def test_each_experiment_is_recorded_with_its_verdict_and_the_run_is_ended(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_shop=EXPERIMENTS)

    result = pytester.runpytest("--report-dir=out")

    result.assert_outcomes(passed=1, failed=1, skipped=1)
    document = _results(pytester.path / "out")
    assert document["run"]["ended_at"] is not None
    assert document["run"]["cluster"] == {"kind": "local", "kubernetes_version": None}
    by_verdict = {e["verdict"]: e for e in document["experiments"]}
    assert sorted(by_verdict) == ["failed", "passed", "skipped"]
    assert all(e["name"] == "shop" for e in document["experiments"])
    assert by_verdict["passed"]["parameters"] == {"requests": 300}
    assert by_verdict["passed"]["statistics"] == {"p_value": 0.5}
    assert by_verdict["passed"]["failure"] is None
    failed = by_verdict["failed"]
    assert failed["statistics"] == {"max_min_ratio": "Infinity"}
    assert "arithmetic broke" in failed["failure"]["message"]
    assert by_verdict["skipped"]["failure"] is None


def test_the_run_folder_is_named_at_the_end_of_the_session(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_shop=EXPERIMENTS)

    result = pytester.runpytest("--report-dir=out")

    folder = (pytester.path / "out" / "latest").resolve()
    result.stdout.fnmatch_lines([f"harness: run recorded in {folder}"])


def test_a_run_without_experiments_writes_no_record(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_plain():\n    assert True\n")

    pytester.runpytest("--report-dir=out").assert_outcomes(passed=1)

    assert not (pytester.path / "out").exists()


UNREACHABLE_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
  - name: nowhere
    cluster:
      server: https://127.0.0.1:{port}
      insecure-skip-tls-verify: true
users:
  - name: nobody
    user:
      token: not-a-token
contexts:
  - name: nowhere
    context:
      cluster: nowhere
      user: nobody
current-context: nowhere
"""


def test_a_cluster_that_does_not_answer_stops_the_run_at_once_with_one_line(
    pytester: pytest.Pytester,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port once the probe socket is closed.
    pytester.makefile(".yaml", kubeconfig=UNREACHABLE_KUBECONFIG.format(port=port))
    pytester.makepyfile(
        test_shop="def test_one(experiment, cluster):\n    raise AssertionError\n"
        "def test_two(experiment, cluster):\n    raise AssertionError\n"
    )

    result = pytester.runpytest(
        "--cluster=existing", "--kubeconfig=kubeconfig.yaml", "--report-dir=out"
    )

    assert result.ret == EXIT_NOT_READY
    result.stdout.fnmatch_lines(
        [
            "*harness: cluster existing is not usable: no API server answers at "
            f"https://127.0.0.1:{port}*"
        ]
    )
    document = _results(pytester.path / "out")
    assert [e["verdict"] for e in document["experiments"]] == ["error"]
    assert "no API server answers" in document["experiments"][0]["failure"]["message"]
    assert document["run"]["ended_at"] is not None


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("kind", id="kind"),
        pytest.param("k3d", id="k3d"),
        pytest.param("minikube", id="minikube"),
    ],
)
def test_a_cluster_tool_that_is_not_installed_is_named_in_the_one_line(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    monkeypatch.setenv("PATH", str(pytester.path))
    pytester.makepyfile(test_shop="def test_one(cluster):\n    raise AssertionError\n")

    result = pytester.runpytest_subprocess(f"--cluster={kind}", "--report-dir=out")

    assert result.ret == EXIT_NOT_READY
    result.stdout.fnmatch_lines(
        [f"*harness: cluster {kind} is not usable: --cluster {kind} needs the {kind}*"]
    )


def test_the_series_holds_every_answer_and_failure_of_the_load_once() -> None:
    from harness.plugin import per_second
    from harness.traffic import read_records, summarise

    records = read_records(
        Path(__file__).parent / "data" / "healing" / "requests.jsonl"
    )
    start = records[0].t
    summary = summarise(records, exit_code=0, output_tail="")

    series = per_second(records, start=start)

    pods = cast(dict[str, list[int]], series["pods"])
    failed = cast(list[int], series["failed"])
    assert sum(failed) == summary.failures
    assert sum(map(sum, pods.values())) + sum(failed) == summary.requests
    assert set(pods) <= set(summary.per_pod)
    last = max(r.t for r in records)
    assert all(len(counts) == int(last - start) + 1 for counts in pods.values())
