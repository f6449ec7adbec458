"""Tests of the run report on a real recorded run, and on damaged copies of it.

``tests/data/results-real.json`` is the results file of a real run of the four
experiments on the embedded cluster. Partial and malformed inputs are derived
from it inside each test, never stored.
"""

import argparse
import json
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from harness import cli, reporting, reporting_cli
from harness.results import RESULTS_FILE, Experiment, Kill, Run, read_run
from harness.statistics import durations

REAL = Path(__file__).parent / "data" / "results-real.json"
Document = dict[str, Any]

EXPECTED_CHARTS = {
    "chart-load-balancing-new",
    "chart-load-balancing-keepalive",
    "chart-self-healing-graceful",
    "chart-self-healing-forced",
    "chart-scaling",
    "chart-service-discovery",
}
_VOID = {"meta", "br", "hr", "img", "input", "link"}


class _TreeParser(HTMLParser):
    """Build an ElementTree of an HTML page, to query it with XPath."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.builder = ElementTree.TreeBuilder()
        self.builder.start("document", {})

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.builder.start(tag, {k: v or "" for k, v in attrs})
        if tag in _VOID:
            self.builder.end(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.builder.start(tag, {k: v or "" for k, v in attrs})
        self.builder.end(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag not in _VOID:
            self.builder.end(tag)

    def handle_data(self, data: str) -> None:
        self.builder.data(data)


def parse_page(text: str) -> ElementTree.Element:
    """Parse the report's HTML into a tree; fails on unbalanced tags."""
    parser = _TreeParser()
    parser.feed(text)
    parser.close()
    parser.builder.end("document")
    return parser.builder.close()


def text_of(element: ElementTree.Element) -> str:
    return " ".join("".join(element.itertext()).split())


def numbers_in(path_data: str) -> list[float]:
    return [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", path_data)]


def groups(tree: ElementTree.Element, prefix: str) -> list[ElementTree.Element]:
    """Return the SVG groups whose id is ``prefix`` and a number."""
    pattern = re.compile(re.escape(prefix) + r"\d+")
    return [g for g in tree.iter("g") if pattern.fullmatch(g.get("id", ""))]


def one(tree: ElementTree.Element, path: str) -> ElementTree.Element:
    found = tree.findall(path)
    assert len(found) == 1, f"{path}: {len(found)} matches"
    return found[0]


@pytest.fixture(scope="module")
def real_text() -> str:
    return REAL.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def real_run() -> Run:
    return read_run(REAL)


@pytest.fixture
def real_document(real_text: str) -> Document:
    document: Document = json.loads(real_text)
    return document


def experiment_of(run: Run, name: str) -> Experiment:
    return next(e for e in run.experiments if e.name == name)


def raw_experiment(document: Document, name: str) -> Document:
    found: Document = next(e for e in document["experiments"] if e["name"] == name)
    return found


def make_run_dir(parent: Path, text: str, name: str = "20261203-114933-2771") -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / RESULTS_FILE).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def rendered(
    tmp_path_factory: pytest.TempPathFactory, real_text: str
) -> reporting.RenderedReport:
    return reporting.render(make_run_dir(tmp_path_factory.mktemp("real"), real_text))


@pytest.fixture(scope="module")
def page(rendered: reporting.RenderedReport) -> str:
    return rendered.html.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tree(page: str) -> ElementTree.Element:
    return parse_page(page)


def section_of(tree: ElementTree.Element, key: str) -> ElementTree.Element:
    return one(tree, f".//section[@id='{key}']")


def chart_of(tree: ElementTree.Element, chart_id: str) -> ElementTree.Element:
    return one(tree, f".//svg[@id='{chart_id}']")


def test_the_recorded_run_is_a_complete_run_of_the_four_experiments(
    real_run: Run,
) -> None:
    assert real_run.complete
    assert sorted(e.name for e in real_run.experiments) == sorted(
        key for key, _ in reporting.EXPERIMENTS
    )


def test_the_report_is_written_into_the_run_folder(
    rendered: reporting.RenderedReport,
) -> None:
    assert rendered.html == rendered.run_dir / "index.html"
    assert rendered.markdown == rendered.run_dir / "summary.md"
    assert rendered.html.is_file()
    assert rendered.markdown.is_file()
    assert rendered.screenshot is None
    assert rendered.notices == ()


def test_the_headline_states_the_overall_verdict(
    rendered: reporting.RenderedReport, tree: ElementTree.Element, real_run: Run
) -> None:
    failed = [e.name for e in real_run.experiments if e.verdict != "passed"]
    headline = text_of(one(tree, ".//header[@id='verdict']//h1"))

    assert headline == rendered.headline
    if failed:
        assert not rendered.passed
        assert headline.startswith("Not proven: ")
        for name in failed:
            assert name.replace("-", " ") in headline
    else:
        assert rendered.passed
        assert headline == "Kubernetes balanced the load and healed itself"


@pytest.mark.parametrize(
    "name",
    [pytest.param(key, id=key) for key, _ in reporting.EXPERIMENTS],
)
def test_every_experiment_shows_its_verdict_and_parameters(
    tree: ElementTree.Element, real_run: Run, name: str
) -> None:
    experiment = experiment_of(real_run, name)
    section = section_of(tree, name)

    assert section.get("data-verdict") == experiment.verdict
    badges = [
        text_of(span)
        for span in section.findall("./div[@class='title']/span")
        if span.get("class", "").startswith("badge ")
    ]
    assert badges == [experiment.verdict]
    shown = {
        text_of(one(item, "dt")): one(item, "dd")
        for item in section.findall("./dl[@class='params']/div")
    }
    assert sorted(shown) == sorted(p.replace("_", " ") for p in experiment.parameters)
    for key, value in experiment.parameters.items():
        cell = shown[key.replace("_", " ")]
        if isinstance(value, bool):
            assert text_of(cell) == ("yes" if value else "no")
        elif isinstance(value, int | float):
            assert float(cell.get("data-value", "nan")) == value
        elif isinstance(value, list):
            assert text_of(cell) == ", ".join(str(item) for item in value)
        else:
            assert text_of(cell) == str(value)


def test_the_page_holds_one_chart_per_expected_chart(tree: ElementTree.Element) -> None:
    charts = [svg.get("id", "") for svg in tree.iter("svg")]

    assert sorted(charts) == sorted(EXPECTED_CHARTS)


def _bar_widths(chart: ElementTree.Element, prefix: str) -> list[tuple[float, float]]:
    """Return the left and right edge of each bar, in drawing order."""
    edges = []
    for bar in groups(chart, prefix):
        xs = numbers_in(one(bar, "path").get("d", ""))[0::2]
        edges.append((min(xs), max(xs)))
    return edges


@pytest.mark.parametrize(
    "mode", [pytest.param("new", id="new"), pytest.param("keepalive", id="keepalive")]
)
def test_load_balancing_bars_are_drawn_to_scale_with_the_even_share_line(
    tree: ElementTree.Element, real_run: Run, mode: str
) -> None:
    experiment = experiment_of(real_run, "load-balancing")
    if mode == "new":
        counts = sorted((pod.name, pod.delta) for pod in experiment.pods)
    else:
        recorded = experiment.statistics["keepalive"]
        assert isinstance(recorded, dict)
        assert isinstance(recorded["pods"], list)
        counts = sorted(
            (str(pod["name"]), int(str(pod["delta"])))
            for pod in recorded["pods"]
            if isinstance(pod, dict)
        )
    chart_id = f"chart-load-balancing-{mode}"
    chart = chart_of(tree, chart_id)
    edges = _bar_widths(chart, f"{chart_id}-bar-")

    assert len(edges) == len(counts) >= 2
    labels = {text_of(t) for t in chart.iter("text")}
    assert {name for name, _ in counts} <= labels
    left = edges[0][0]
    assert all(start == pytest.approx(left) for start, _ in edges)
    largest = max(range(len(counts)), key=lambda i: counts[i][1])
    scale = (edges[largest][1] - left) / counts[largest][1]
    for (_, count), (_, right) in zip(counts, edges, strict=True):
        assert right - left == pytest.approx(count * scale, abs=0.01)
    even = one(chart, f".//g[@id='{chart_id}-even-share']/path")
    x = numbers_in(even.get("d", ""))[0]
    total = sum(count for _, count in counts)
    assert x - left == pytest.approx(total / len(counts) * scale, abs=0.01)


def test_load_balancing_figures_beside_the_chart_are_the_recorded_statistics(
    tree: ElementTree.Element, real_run: Run
) -> None:
    statistics = experiment_of(real_run, "load-balancing").statistics
    section = section_of(tree, "load-balancing")
    panes = section.findall(".//div[@class='pane']")

    assert len(panes) == 2
    for pane, mode in zip(panes, ("new", "keepalive"), strict=True):
        recorded = statistics[mode]
        assert isinstance(recorded, dict)
        facts = {
            text_of(one(item, "dt")): one(item, "dd")
            for item in pane.findall(".//dl[@class='facts']/div")
        }
        for label, key in (
            ("requests, n", "total"),
            ("pods, k", "pods"),
            ("chi-squared p", "p_value"),
            ("max/min", "max_min_ratio"),
            ("CV (expected)", "coefficient_of_variation"),
        ):
            value = recorded[key]
            expected = len(value) if isinstance(value, list) else value
            assert float(facts[label].get("data-value", "nan")) == expected, label
    assert "kube-proxy balances connections, not requests" in text_of(section)


def _kind(kill: Kill) -> str:
    return "forced" if kill.grace == 0 else "graceful"


@pytest.mark.parametrize(
    "kind",
    [pytest.param("graceful", id="graceful"), pytest.param("forced", id="forced")],
)
def test_the_healing_timeline_marks_each_kill_and_each_ready(
    tree: ElementTree.Element, real_run: Run, kind: str
) -> None:
    experiment = experiment_of(real_run, "self-healing")
    series = experiment.series[kind]
    assert isinstance(series, dict)
    assert isinstance(series["pods"], dict)
    kills = [k for k in experiment.kills if _kind(k) == kind]
    chart_id = f"chart-self-healing-{kind}"
    chart = chart_of(tree, chart_id)

    assert kills
    lines = groups(chart, f"{chart_id}-pod-")
    assert len(lines) == len(series["pods"])
    assert all(len(numbers_in(one(g, "path").get("d", ""))) >= 4 for g in lines)
    assert len(groups(chart, f"{chart_id}-kill-")) == len(kills)
    assert len(groups(chart, f"{chart_id}-ready-")) == len(
        [k for k in kills if k.ready_s is not None]
    )
    assert set(series["pods"]) <= {text_of(t) for t in chart.iter("text")}


def test_the_recovery_table_has_a_row_per_kill_and_the_median_and_p95_of_each_kind(
    tree: ElementTree.Element, real_run: Run
) -> None:
    experiment = experiment_of(real_run, "self-healing")
    table = one(tree, ".//table[@id='table-recovery']")
    columns = [text_of(th) for th in table.findall("./thead/tr/th")]
    stages = {
        "created": "created_s",
        "scheduled": "scheduled_s",
        "running": "running_s",
        "Ready": "ready_s",
        "first request": "first_request_s",
    }
    rows = table.findall("./tbody/tr")

    assert len(rows) == len(experiment.kills)
    for row, kill in zip(rows, experiment.kills, strict=True):
        cells = dict(zip(columns, row.findall("td"), strict=True))
        assert text_of(cells["deleted pod"]) == kill.pod
        assert text_of(cells["kind"]) == _kind(kill)
        for column, attribute in stages.items():
            value = getattr(kill, attribute)
            shown = cells[column].get("data-value")
            assert (None if shown is None else float(shown)) == value, column

    summaries = {}
    for row in table.findall("./tfoot/tr"):
        cells = dict(zip(columns, row.findall("td"), strict=True))
        summaries[text_of(cells["deleted pod"])] = cells
    kinds = sorted({_kind(k) for k in experiment.kills})
    assert sorted(summaries) == sorted(
        f"{label}, {kind}" for kind in kinds for label in ("median", "p95")
    )
    for kind in kinds:
        for column, attribute in stages.items():
            measured = [
                getattr(k, attribute)
                for k in experiment.kills
                if _kind(k) == kind and getattr(k, attribute) is not None
            ]
            if not measured:
                continue
            expected = durations(measured)
            median = summaries[f"median, {kind}"][column].get("data-value", "nan")
            p95 = summaries[f"p95, {kind}"][column].get("data-value", "nan")
            assert float(median) == expected.median, (kind, column)
            assert float(p95) == expected.p95, (kind, column)


def test_the_scaling_chart_stacks_each_pods_traffic_under_the_replica_steps(
    tree: ElementTree.Element, real_run: Run
) -> None:
    experiment = experiment_of(real_run, "scaling")
    series = experiment.series["scaling"]
    steps = experiment.statistics["steps"]
    assert isinstance(series, dict)
    assert isinstance(series["pods"], dict)
    assert isinstance(steps, list)
    chart = chart_of(tree, "chart-scaling")

    assert len(groups(chart, "chart-scaling-pod-")) == len(series["pods"])
    replicas = one(chart, ".//g[@id='chart-scaling-replicas']/path")
    levels = set(numbers_in(replicas.get("d", ""))[1::2])
    asked = experiment.parameters["steps"]
    assert isinstance(asked, list)
    # One height per distinct replica count asked for, first step included.
    assert len(levels) == len(set(asked))
    table = one(tree, ".//table[@id='table-scaling-steps']")
    assert len(table.findall("./tbody/tr")) == len(steps)


def test_service_discovery_draws_a_bar_per_catalog_and_customer_pod(
    tree: ElementTree.Element, real_run: Run
) -> None:
    statistics = experiment_of(real_run, "service-discovery").statistics
    catalog = statistics["catalog_calls"]
    customer = statistics["customer_calls"]
    assert isinstance(catalog, dict)
    assert isinstance(customer, dict)
    chart = chart_of(tree, "chart-service-discovery")

    assert len(groups(chart, "chart-service-discovery-catalog-bar-")) == len(catalog)
    assert len(groups(chart, "chart-service-discovery-customer-bar-")) == len(customer)
    labels = {text_of(t) for t in chart.iter("text")}
    assert set(catalog) | set(customer) <= labels


def test_the_run_section_names_the_cluster_versions_and_times(
    tree: ElementTree.Element, real_run: Run
) -> None:
    facts = {
        text_of(one(item, "dt")): text_of(one(item, "dd"))
        for item in one(tree, ".//section[@id='run']").findall(".//dl/div")
    }

    assert facts["run"] == real_run.id
    assert facts["cluster"] == real_run.cluster.kind
    assert facts["Kubernetes"] == real_run.cluster.kubernetes_version
    assert facts["harness"] == real_run.harness_version
    assert facts["started"] == real_run.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert real_run.ended_at is not None
    assert facts["ended"] == real_run.ended_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    assert "services (images' tag)" in facts
    assert facts["duration"]


def test_the_page_refers_to_nothing_outside_itself(page: str) -> None:
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)["']""", page)
    references += re.findall(r"url\(\s*['\"]?([^)'\"]*)", page)

    assert references
    assert all(ref.startswith("#") for ref in references), references
    for forbidden in ("<script", "<link", "<img", "<iframe", "@import", "@font-face"):
        assert forbidden not in page.lower()


def test_no_attribute_on_the_page_holds_a_url(tree: ElementTree.Element) -> None:
    with_urls = [
        (element.tag, name, value)
        for element in tree.iter()
        for name, value in element.attrib.items()
        if "://" in value
    ]

    assert with_urls == []


def test_every_id_on_the_page_is_unique(tree: ElementTree.Element) -> None:
    ids = [element.get("id") for element in tree.iter() if element.get("id")]

    assert len(ids) == len(set(ids))


def test_the_summary_tables_each_verdict_and_its_key_figures(
    rendered: reporting.RenderedReport, real_run: Run
) -> None:
    summary = rendered.markdown.read_text(encoding="utf-8")
    rows = {
        cells[0]: cells[1:]
        for line in summary.splitlines()
        if line.startswith("| ") and not line.startswith("| ---")
        for cells in [[c.strip() for c in line.strip("|").split(" | ")]]
    }

    assert f"## kube-harness run {real_run.id}" in summary
    assert rendered.headline in summary
    for key, title in reporting.EXPERIMENTS:
        verdict, figures = rows[title]
        assert verdict.endswith(experiment_of(real_run, key).verdict)
        assert figures
    balancing = experiment_of(real_run, "load-balancing").statistics
    for mode in ("new", "keepalive"):
        recorded = balancing[mode]
        assert isinstance(recorded, dict)
        assert f"p = {float(str(recorded['p_value'])):.3g}" in rows["Load balancing"][1]
    healing = experiment_of(real_run, "self-healing")
    for kind in ("graceful", "forced"):
        ready = [k.ready_s for k in healing.kills if _kind(k) == kind and k.ready_s]
        expected = durations([r for r in ready if r is not None])
        assert (
            f"{kind}: Ready median {expected.median:.2f} s, p95 {expected.p95:.2f} s"
            in rows["Self-healing"][1]
        )
    assert "<" not in summary.replace("&lt;", "")


def test_rendering_twice_gives_the_same_bytes(tmp_path: Path, real_text: str) -> None:
    first = reporting.render(make_run_dir(tmp_path / "a", real_text))
    second = reporting.render(make_run_dir(tmp_path / "b", real_text))
    again = reporting.render(first.run_dir)

    assert first.html.read_bytes() == second.html.read_bytes()
    assert first.html.read_bytes() == again.html.read_bytes()
    assert first.markdown.read_bytes() == second.markdown.read_bytes()


def test_a_run_folder_reached_through_latest_gets_its_report_in_the_folder(
    tmp_path: Path, real_text: str
) -> None:
    folder = make_run_dir(tmp_path, real_text)
    (tmp_path / "latest").symlink_to(folder.name)

    rendered = reporting.render(tmp_path / "latest")

    assert rendered.run_dir == folder.resolve()
    assert (folder / "index.html").is_file()


# Partial and damaged results, each derived from the real file.
#
# Each damage returns the damaged text, the notices the report must show (as
# they read on the page), and the charts it can still draw.

Damage = tuple[str, list[str], set[str]]


def index_of(document: Document, name: str) -> int:
    return [e["name"] for e in document["experiments"]].index(name)


def _drop_experiment(document: Document) -> Damage:
    document["experiments"].pop(index_of(document, "self-healing"))
    return (
        json.dumps(document),
        ["the results hold no 'self-healing' experiment"],
        EXPECTED_CHARTS - {"chart-self-healing-graceful", "chart-self-healing-forced"},
    )


def _interrupted(document: Document) -> Damage:
    document["run"]["ended_at"] = None
    return json.dumps(document), ["The run has no end time"], EXPECTED_CHARTS


def _no_ended_at(document: Document) -> Damage:
    del document["run"]["ended_at"]
    return (
        json.dumps(document),
        ["run.ended_at is missing", "The run has no end time"],
        EXPECTED_CHARTS,
    )


def _no_kills(document: Document) -> Damage:
    index = index_of(document, "self-healing")
    del document["experiments"][index]["kills"]
    return (
        json.dumps(document),
        [f"experiments[{index}].kills is missing", "no kills were recorded"],
        EXPECTED_CHARTS,
    )


def _pod_without_delta(document: Document) -> Damage:
    index = index_of(document, "load-balancing")
    del document["experiments"][index]["pods"][0]["delta"]
    return (
        json.dumps(document),
        [
            f"experiments[{index}].pods[0].delta is missing",
            f"experiments[{index}] (load-balancing) cannot be shown",
            "the results hold no 'load-balancing' experiment",
        ],
        EXPECTED_CHARTS
        - {"chart-load-balancing-new", "chart-load-balancing-keepalive"},
    )


def _no_keepalive_statistics(document: Document) -> Damage:
    del raw_experiment(document, "load-balancing")["statistics"]["keepalive"]
    return (
        json.dumps(document),
        ["statistics.keepalive is missing"],
        EXPECTED_CHARTS - {"chart-load-balancing-keepalive"},
    )


def _no_scaling_series(document: Document) -> Damage:
    raw_experiment(document, "scaling")["series"] = {}
    return (
        json.dumps(document),
        ["series.scaling holds no requests per pod"],
        EXPECTED_CHARTS - {"chart-scaling"},
    )


def _cut_in_half(document: Document) -> Damage:
    text = json.dumps(document, indent=2)
    return text[: len(text) // 2], ["results.json is not valid JSON"], set()


def _not_a_run(document: Document) -> Damage:
    return (
        json.dumps(document["experiments"]),
        ["the document is a list, expected an object"],
        set(),
    )


def _newer_schema(document: Document) -> Damage:
    document["schema"] = 2
    return (
        json.dumps(document),
        ["schema 2 is not the one this harness reads"],
        EXPECTED_CHARTS,
    )


@pytest.mark.parametrize(
    ("damage", "proven"),
    [
        pytest.param(_drop_experiment, False, id="an-experiment-missing"),
        pytest.param(_interrupted, False, id="interrupted"),
        pytest.param(_no_ended_at, False, id="no-ended-at"),
        pytest.param(_no_kills, False, id="a-field-missing"),
        pytest.param(_pod_without_delta, False, id="a-pod-field-missing"),
        # The verdicts are intact: the report lacks a figure, the run its proof not.
        pytest.param(_no_keepalive_statistics, True, id="a-statistic-missing"),
        pytest.param(_no_scaling_series, True, id="a-series-missing"),
        pytest.param(_cut_in_half, False, id="cut-in-half"),
        pytest.param(_not_a_run, False, id="not-a-run"),
        pytest.param(_newer_schema, False, id="newer-schema"),
    ],
)
def test_partial_or_damaged_results_still_render_with_a_notice_of_what_is_missing(
    tmp_path: Path,
    real_document: Document,
    damage: Callable[[Document], Damage],
    proven: bool,
) -> None:
    text, notices, charts = damage(real_document)
    folder = make_run_dir(tmp_path, text)

    rendered = reporting.render(folder)

    tree = parse_page(rendered.html.read_text(encoding="utf-8"))
    shown = text_of(one(tree, ".//aside[@id='notices']"))
    summary = rendered.markdown.read_text(encoding="utf-8")
    for notice in notices:
        assert notice in shown, notice
        assert any(notice in n for n in rendered.notices), notice
        assert notice in summary, notice
    assert {svg.get("id") for svg in tree.iter("svg")} == charts
    assert rendered.passed is proven
    assert rendered.headline in text_of(one(tree, ".//header[@id='verdict']//h1"))


def test_unreadable_results_say_so_in_the_headline_and_the_summary(
    tmp_path: Path, real_text: str
) -> None:
    folder = make_run_dir(tmp_path, real_text[: len(real_text) // 3])

    rendered = reporting.render(folder)

    assert rendered.headline == "No results to show: results.json cannot be read"
    assert rendered.headline in rendered.html.read_text(encoding="utf-8")
    assert rendered.headline in rendered.markdown.read_text(encoding="utf-8")
    assert "| Experiment |" not in rendered.markdown.read_text(encoding="utf-8")


def test_pod_names_messages_and_log_tails_are_escaped(
    tmp_path: Path, real_document: Document
) -> None:
    hostile = "<script>alert('x')</script>"
    balancing = raw_experiment(real_document, "load-balancing")
    balancing["pods"][0]["name"] = f"catalog-{hostile}"
    scaling = raw_experiment(real_document, "scaling")
    scaling["verdict"] = "failed"
    scaling["failure"] = {
        "message": f"AssertionError: {hostile}",
        "events": [f"Warning Unhealthy pod/catalog: {hostile}"],
        "logs": {f"catalog-{hostile}": f"Traceback\n{hostile}\n"},
    }
    folder = make_run_dir(tmp_path, json.dumps(real_document))

    rendered = reporting.render(folder)

    page = rendered.html.read_text(encoding="utf-8")
    assert "<script" not in page.lower()
    tree = parse_page(page)
    section = section_of(tree, "scaling")
    tails = [text_of(pre) for pre in section.findall(".//details/pre")]
    assert f"Warning Unhealthy pod/catalog: {hostile}" in tails
    assert f"Traceback {hostile}" in tails
    summaries = [text_of(s) for s in section.findall(".//details/summary")]
    assert f"Log tail of catalog-{hostile}" in summaries
    chart = chart_of(tree, "chart-load-balancing-new")
    assert f"catalog-{hostile}" in {text_of(t) for t in chart.iter("text")}
    summary = rendered.markdown.read_text(encoding="utf-8")
    assert "<script" not in summary
    assert "&lt;script&gt;" in summary
    assert rendered.headline.startswith("Not proven: scaling failed")


def test_the_junit_totals_of_the_run_are_shown_when_pytest_wrote_them(
    tmp_path: Path, real_text: str
) -> None:
    folder = make_run_dir(tmp_path, real_text)
    # The shape pytest's --junitxml writes: one suite, with a failing case.
    (folder / "junit.xml").write_text(
        '<?xml version="1.0" encoding="utf-8"?><testsuites>'
        '<testsuite name="pytest" errors="0" failures="1" skipped="0" tests="4" '
        'time="312.5"><testcase classname="experiments.test_scaling" '
        'name="test_scales" time="40.1"><failure message="lost">x</failure>'
        "</testcase></testsuite></testsuites>",
        encoding="utf-8",
    )

    rendered = reporting.render(folder)

    page = parse_page(rendered.html.read_text(encoding="utf-8"))
    facts = {
        text_of(one(item, "dt")): text_of(one(item, "dd"))
        for item in one(page, ".//section[@id='run']").findall(".//dl/div")
    }
    assert facts["tests (junit.xml)"] == (
        "4 run, 1 failed, 0 errors, 0 skipped, in 5 min 12 s"
    )
    assert "experiments.test_scaling::test_scales" in text_of(
        one(page, ".//section[@id='run']")
    )


def test_a_damaged_junit_file_is_a_notice_not_a_failure(
    tmp_path: Path, real_text: str
) -> None:
    folder = make_run_dir(tmp_path, real_text)
    (folder / "junit.xml").write_text("<testsuites><testsuite", encoding="utf-8")

    rendered = reporting.render(folder)

    assert any(n.startswith("junit.xml cannot be read") for n in rendered.notices)


# The command line.


@pytest.fixture
def with_report_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make sure ``harness`` has the ``report`` command, wired or not."""
    build = cli.build_parser

    def build_with_report() -> argparse.ArgumentParser:
        parser = build()
        for action in parser._actions:
            if (
                isinstance(action, argparse._SubParsersAction)
                and "report" not in action.choices
            ):
                reporting_cli.add_report_command(action)
        return parser

    monkeypatch.setattr(cli, "build_parser", build_with_report)


@pytest.mark.usefixtures("with_report_command")
def test_harness_report_renders_a_run_and_prints_the_paths(
    tmp_path: Path, real_text: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_run_dir(tmp_path, real_text)

    status = cli.main(["report", str(folder)])

    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert out == [
        f"html\t{folder.resolve() / 'index.html'}",
        f"markdown\t{folder.resolve() / 'summary.md'}",
    ]
    assert (folder / "index.html").is_file()


@pytest.mark.usefixtures("with_report_command")
def test_harness_report_renders_the_latest_run_by_default(
    tmp_path: Path,
    real_text: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folder = make_run_dir(tmp_path, real_text)
    (tmp_path / "latest").symlink_to(folder.name)
    monkeypatch.setattr(reporting_cli, "DEFAULT_RUN_DIR", tmp_path / "latest")

    status = cli.main(["report"])

    assert status == 0
    assert f"html\t{folder.resolve() / 'index.html'}" in capsys.readouterr().out


@pytest.mark.usefixtures("with_report_command")
def test_harness_report_prints_the_notices_of_a_partial_run(
    tmp_path: Path, real_document: Document, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = make_run_dir(tmp_path, _interrupted(real_document)[0])

    status = cli.main(["report", str(folder)])

    err = capsys.readouterr().err
    assert status == 0
    assert "harness: notice: The run has no end time" in err


@pytest.mark.parametrize(
    ("make", "named"),
    [
        pytest.param(lambda base: base / "nowhere", "nowhere", id="no-folder"),
        pytest.param(lambda base: base, RESULTS_FILE, id="no-results-file"),
    ],
)
@pytest.mark.usefixtures("with_report_command")
def test_harness_report_of_a_missing_run_fails_with_one_line_naming_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    make: Callable[[Path], Path],
    named: str,
) -> None:
    target = make(tmp_path)

    status = cli.main(["report", str(target)])

    captured = capsys.readouterr()
    assert status == 1
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"harness: {target}")
    assert named in lines[0]
    assert not (tmp_path / "index.html").exists()
