"""The report of a run: one self-contained HTML page and a Markdown summary.

A run folder holds ``results.json``. This module turns it into ``index.html``
(the verdicts, each experiment's parameters and charts, the run's details and
what the cluster said when something failed) and ``summary.md`` (verdicts and
key figures as a GitHub-flavoured table, for a CI job summary). The page loads
nothing from anywhere: its style is inline, its charts are SVG drawn by
matplotlib and inlined, and it needs no script, so it can be kept as a CI
artifact and opened offline years later.

A run cut short, or a damaged file, still gets a report: what can be read is
shown, and a notice at the top says exactly what is missing. Rendering is
deterministic (no dates in the SVG, fixed ids), so a second rendering of the
same run gives the same bytes.

The optional screenshot is taken with Debian's Chromium driven by Playwright,
never a browser Playwright downloads, in a fresh profile with networking off.
"""

import io
import json
import logging
import math
import re
import tempfile
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import matplotlib
from markupsafe import Markup, escape
from matplotlib.figure import Figure

from harness import statistics
from harness.errors import HarnessError, PrerequisiteError
from harness.results import (
    JSON,
    RESULTS_FILE,
    SCHEMA,
    Experiment,
    Failure,
    Kill,
    ResultsError,
    Run,
    parse_run,
)

matplotlib.use("Agg")

logger = logging.getLogger(__name__)

HTML_FILE = "index.html"
MARKDOWN_FILE = "summary.md"
SCREENSHOT_FILE = "screenshot.png"
#: Written by pytest's ``--junitxml`` beside the results, when the run asked.
JUNIT_FILE = "junit.xml"
TEMPLATE = "report.html.j2"

#: The experiments a full run holds, in the order the report shows them.
EXPERIMENTS: tuple[tuple[str, str], ...] = (
    ("load-balancing", "Load balancing"),
    ("self-healing", "Self-healing"),
    ("scaling", "Scaling"),
    ("service-discovery", "Service discovery"),
)
PASSED_HEADLINE = "Kubernetes balanced the load and healed itself"

#: Debian's Chromium; Playwright drives it instead of a browser of its own.
CHROMIUM = Path("/usr/bin/chromium")
#: Headless, no sandbox (root), and no traffic of the browser's own.
BROWSER_ARGS: tuple[str, ...] = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    # Resolve no host name at all: the page is a local file.
    "--host-resolver-rules=MAP * ~NOTFOUND",
)
SCREENSHOT_WIDTH = 1280

_VERDICT_WORDS = {
    "failed": "failed",
    "error": "could not run",
    "skipped": "was skipped",
    "missing": "has no result",
}
_MARKDOWN_BADGES = {
    "passed": "✅ passed",
    "failed": "❌ failed",
    "error": "⚠️ error",
    "skipped": "⏭️ skipped",
    "missing": "❔ missing",
}
_STAGES: tuple[tuple[str, str], ...] = (
    ("created_s", "created"),
    ("scheduled_s", "scheduled"),
    ("running_s", "running"),
    ("ready_s", "Ready"),
    ("first_request_s", "first request"),
)
_MODES: tuple[tuple[str, str], ...] = (
    ("new", "A new connection per request"),
    ("keepalive", "Connections kept alive"),
)
_HEALING_MODES: tuple[tuple[str, str], ...] = (
    ("graceful", "Graceful deletions"),
    ("forced", "Forced deletions (grace 0)"),
)
_PINNING = (
    "kube-proxy balances connections, not requests: it picks a pod when a "
    "connection opens, and every request sent on that connection goes to the same "
    "pod. With a new connection per request, on both legs (client to Apache, "
    "Apache to the catalog Service), every request is an independent pick, so the "
    "counts follow an even split: the chi-squared test passes and the coefficient "
    "of variation stays near its expected value sqrt((k-1)/n). With connections "
    "kept alive, a few long-lived connections carry all the requests and pin them "
    "to a few pods. That second measurement is recorded to show the pinning; it is "
    "not judged."
)
_INTROS = {
    "load-balancing": (
        "Requests through the front door spread evenly over the catalog pods, "
        "and each pod's own counter agrees with what the client saw."
    ),
    "self-healing": (
        "Catalog pods deleted under load, first gracefully and then forcibly, "
        "are replaced, become Ready and serve again."
    ),
    "scaling": (
        "The catalog scales step by step under load: new pods serve soon after "
        "they are Ready, and scaling down loses no request."
    ),
    "service-discovery": (
        "Orders reach the catalog and customer services by their Service names, "
        "and the catalog's calls reach every catalog pod."
    ),
}

_PALETTE = (
    "#2563eb",
    "#ea580c",
    "#16a34a",
    "#9333ea",
    "#0891b2",
    "#ca8a04",
    "#db2777",
    "#4b5563",
    "#65a30d",
    "#7c3aed",
)
_KILL_COLOUR = "#dc2626"
_READY_COLOUR = "#16a34a"
_EVEN_COLOUR = "#111827"
_STYLE: Any = {
    # Text stays text, in the page's fonts; ids do not depend on the process.
    "svg.fonttype": "none",
    "svg.hashsalt": "kube-harness",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Helvetica", "Arial"],
    "font.size": 10,
    "axes.titlesize": 10.5,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#9ca3af",
    "axes.labelcolor": "#374151",
    "axes.grid": True,
    "axes.axisbelow": True,
    "grid.color": "#e5e7eb",
    "grid.linewidth": 0.8,
    "xtick.color": "#4b5563",
    "ytick.color": "#4b5563",
    "legend.frameon": False,
    "legend.fontsize": 8.5,
    "figure.facecolor": "white",
}


class ReportError(HarnessError):
    """A run folder cannot be reported on: it or its results file is missing."""


# What could be read.


@dataclass(frozen=True)
class RunHeader:
    """Where and when a run ran; a field the file lacks is None."""

    id: str
    cluster_kind: str | None = None
    kubernetes_version: str | None = None
    harness_version: str | None = None
    #: The tag of the images the services ran from, when the run recorded it.
    services_version: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


@dataclass(frozen=True)
class Reading:
    """What could be read from a run folder's results file."""

    header: RunHeader
    experiments: tuple[Experiment, ...]
    #: What is wrong with the file, one sentence per problem.
    notices: tuple[str, ...] = ()
    #: False when nothing could be read: not JSON, or not a run at all.
    readable: bool = True


_PLACEHOLDER_RUN: dict[str, JSON] = {
    "id": "-",
    "cluster": {"kind": "-", "kubernetes_version": None},
    "harness_version": "-",
    "started_at": "1970-01-01T00:00:00Z",
    "ended_at": None,
}
_EXPERIMENT_DEFAULTS: dict[str, JSON] = {
    "parameters": {},
    "pods": [],
    "statistics": {},
    "kills": [],
    "series": {},
    "failure": None,
}
_KILL_NUMBERS = (
    "created_s",
    "scheduled_s",
    "running_s",
    "ready_s",
    "first_request_s",
    "grace",
)


def read_results(run_dir: Path) -> Reading:
    """Read a run folder's results with the project's reader, salvaging what it can.

    A missing folder or file is an error; a file that is not valid JSON or
    does not follow the schema gives back what could be read and notices
    naming what could not.
    """
    if not run_dir.is_dir():
        raise ReportError(
            f"{run_dir}: no such run folder; pass a folder under reports/ that "
            f"holds {RESULTS_FILE}"
        )
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise ReportError(
            f"{path}: no such results file; run the experiments first or pass "
            "another run folder"
        )
    fallback = RunHeader(id=run_dir.resolve().name)
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as e:
        where = (
            f"{e.msg} at line {e.lineno} column {e.colno}"
            if isinstance(e, json.JSONDecodeError)
            else "nested too deeply"
        )
        return Reading(
            header=fallback,
            experiments=(),
            notices=(
                f"{RESULTS_FILE} is not valid JSON ({where}): the file was cut "
                "off or damaged, so there are no results to show.",
            ),
            readable=False,
        )
    services_version = _services_version(document)
    try:
        run = parse_run(document, source=RESULTS_FILE)
    except ResultsError as e:
        return _salvage(document, str(e), fallback=fallback)
    return Reading(
        header=_header_of(run, services_version=services_version),
        experiments=run.experiments,
    )


def _services_version(document: object) -> str | None:
    # TODO: the results schema has no field for the services' version; it is
    # read from run.services_version once the writer records the images' tag.
    if not isinstance(document, dict):
        return None
    run = document.get("run")
    value = run.get("services_version") if isinstance(run, dict) else None
    return value if isinstance(value, str) else None


def _header_of(run: Run, *, services_version: str | None) -> RunHeader:
    return RunHeader(
        id=run.id,
        cluster_kind=run.cluster.kind,
        kubernetes_version=run.cluster.kubernetes_version,
        harness_version=run.harness_version,
        services_version=services_version,
        started_at=run.started_at,
        ended_at=run.ended_at,
    )


#: Where each problem in the reader's message starts: the place it names.
_PROBLEM_START = re.compile(r"; (?=(?:run|experiments|schema|the document)\b)")


def _problems(message: str) -> list[str]:
    """Split the reader's one-line message into its problems."""
    body = message.removeprefix(f"{RESULTS_FILE}: ")
    return [part.strip() for part in _PROBLEM_START.split(body) if part.strip()]


def _salvage(document: object, message: str, *, fallback: RunHeader) -> Reading:
    notices = [
        f"{RESULTS_FILE} does not follow the schema: {problem}."
        for problem in _problems(message)
    ]
    if not isinstance(document, dict):
        return Reading(
            header=fallback, experiments=(), notices=tuple(notices), readable=False
        )

    raw_run = document.get("run")
    header = _lenient_header(
        raw_run if isinstance(raw_run, dict) else {},
        fallback=fallback,
        services_version=_services_version(document),
    )
    experiments = []
    raw_experiments = document.get("experiments")
    for index, raw in enumerate(
        raw_experiments if isinstance(raw_experiments, list) else []
    ):
        experiment, problem = _lenient_experiment(raw)
        if experiment is None:
            name = raw.get("name") if isinstance(raw, dict) else None
            label = f"experiments[{index}]" + (
                f" ({name})" if isinstance(name, str) else ""
            )
            notices.append(f"{label} cannot be shown: {problem}.")
        else:
            experiments.append(experiment)
    return Reading(
        header=header, experiments=tuple(experiments), notices=tuple(notices)
    )


def _text(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _moment(obj: Mapping[str, Any], key: str) -> datetime | None:
    text = _text(obj, key)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _lenient_header(
    raw: Mapping[str, Any], *, fallback: RunHeader, services_version: str | None
) -> RunHeader:
    cluster = raw.get("cluster")
    cluster = cluster if isinstance(cluster, dict) else {}
    return RunHeader(
        id=_text(raw, "id") or fallback.id,
        cluster_kind=_text(cluster, "kind"),
        kubernetes_version=_text(cluster, "kubernetes_version"),
        harness_version=_text(raw, "harness_version"),
        services_version=services_version,
        started_at=_moment(raw, "started_at"),
        ended_at=_moment(raw, "ended_at"),
    )


def _lenient_experiment(raw: object) -> tuple[Experiment | None, str]:
    """Fill what an experiment may lack, then read it with the project's reader."""
    if not isinstance(raw, dict):
        return None, "it is not an object"
    filled = dict(raw)
    for key, default in _EXPERIMENT_DEFAULTS.items():
        if key not in filled:
            filled[key] = json.loads(json.dumps(default))
    if "ended_at" not in filled and "started_at" in filled:
        filled["ended_at"] = filled["started_at"]
    if isinstance(filled["pods"], list):
        filled["pods"] = [
            {"client_count": None, **pod} if isinstance(pod, dict) else pod
            for pod in filled["pods"]
        ]
    if isinstance(filled["kills"], list):
        filled["kills"] = [
            {**dict.fromkeys(_KILL_NUMBERS), **kill} if isinstance(kill, dict) else kill
            for kill in filled["kills"]
        ]
    document = {"schema": SCHEMA, "run": _PLACEHOLDER_RUN, "experiments": [filled]}
    try:
        run = parse_run(document, source=RESULTS_FILE)
    except ResultsError as e:
        return None, "; ".join(_problems(str(e)))
    return run.experiments[0], ""


# What the page shows.


@dataclass(frozen=True)
class Fact:
    """One labelled figure, such as ``chi-squared p`` and ``0.52``."""

    label: str
    value: str
    #: The number behind ``value``, kept in the page for machines to read.
    number: float | None = None


@dataclass(frozen=True)
class Cell:
    """One table cell: its text and, for a figure, the number behind it."""

    text: str
    number: float | None = None


@dataclass(frozen=True)
class Table:
    """A table of figures with an optional footer of summary rows."""

    id: str
    caption: str
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    foot: tuple[tuple[Cell, ...], ...] = ()


@dataclass(frozen=True)
class Chart:
    """One chart, as the SVG text matplotlib drew."""

    id: str
    title: str
    svg: str

    @property
    def markup(self) -> Markup:
        """Return the SVG as markup; matplotlib escaped every text in it."""
        return Markup(self.svg)


@dataclass(frozen=True)
class Pane:
    """A chart with the figures that go beside it."""

    title: str
    chart: Chart | None
    facts: tuple[Fact, ...] = ()
    #: A sentence under the figures, such as what a verdict rests on.
    note: str = ""
    #: "passed" or "failed" when this part was judged on its own.
    judged: str = ""


@dataclass(frozen=True)
class Section:
    """Everything the report says about one experiment."""

    key: str
    title: str
    #: A verdict of the results file, or "missing" when the run has none.
    verdict: str
    intro: str
    timing: str = ""
    parameters: tuple[Fact, ...] = ()
    panes: tuple[Pane, ...] = ()
    tables: tuple[Table, ...] = ()
    explanation: str = ""
    notices: tuple[str, ...] = ()
    failure: Failure | None = None
    #: The key figures in one line, for the Markdown summary.
    key_figures: str = ""


@dataclass(frozen=True)
class RenderedReport:
    """The files a rendering wrote, and what it concluded."""

    run_dir: Path
    html: Path
    markdown: Path
    #: The full-page screenshot, when one was asked for.
    screenshot: Path | None
    passed: bool
    headline: str
    #: What the results lacked, one sentence each; empty for a complete run.
    notices: tuple[str, ...] = field(default_factory=tuple)


# Formatting.


def _number(value: JSON | None) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _object(value: JSON | None) -> dict[str, JSON]:
    return value if isinstance(value, dict) else {}


def _list(value: JSON | None) -> list[JSON]:
    return value if isinstance(value, list) else []


def _figure(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.3g}"


def _p_value(value: float | None) -> str:
    """Format a p-value; one too small for a float is shown as a bound."""
    if value == 0:
        return "< 1e-300"
    return _figure(value)


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f} s"


def _plain(value: JSON) -> str:
    """Return a parameter's value as text a person reads."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return _figure(float(value))
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(
        isinstance(item, int | float | str) for item in value
    ):
        return ", ".join(_plain(item) for item in value)
    return json.dumps(value, sort_keys=True, separators=(", ", ": "))


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "not recorded"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _parameters(experiment: Experiment) -> tuple[Fact, ...]:
    return tuple(
        Fact(name.replace("_", " "), _plain(value), _number(value))
        for name, value in experiment.parameters.items()
    )


def _timing(experiment: Experiment) -> str:
    took = (experiment.ended_at - experiment.started_at).total_seconds()
    return f"started {_when(experiment.started_at)}, took {_duration(took)}"


# Charts.


@contextmanager
def _style() -> Iterator[None]:
    with matplotlib.rc_context(_STYLE):
        yield


def _svg(figure: Figure, *, chart_id: str, label: str) -> str:
    """Return the figure as SVG for inlining, with ids unique on the page."""
    buffer = io.StringIO()
    figure.savefig(
        buffer,
        format="svg",
        metadata={"Date": None},
        bbox_inches="tight",
        pad_inches=0.06,
    )
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r"\s*<metadata>.*?</metadata>", "", text, flags=re.DOTALL)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{chart_id}-\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{chart_id}-\1)", text)
    text = re.sub(r'xlink:href="#([^"]+)"', rf'xlink:href="#{chart_id}-\1"', text)

    # The page sizes the chart; its natural width stays its largest.
    root_end = text.index(">")
    root = text[:root_end]
    width = re.search(r'\swidth="([0-9.]+)pt"', root)
    root = re.sub(r'\s(width|height)="[0-9.]+pt"', "", root)
    # Inline SVG in HTML needs no namespace declarations; the page names no URL.
    root = re.sub(r'\sxmlns(:xlink)?="[^"]*"', "", root)
    style = f' style="max-width: {width[1]}pt"' if width else ""
    root += (
        f' id="{chart_id}" class="chart" role="img" aria-label="{escape(label)}"{style}'
    )
    return root + text[root_end:].rstrip() + "\n"


def _colours(names: Sequence[str]) -> dict[str, str]:
    return {name: _PALETTE[i % len(_PALETTE)] for i, name in enumerate(names)}


def _draw_bars(
    axes: Any,
    counts: Sequence[tuple[str, int]],
    *,
    gid: str,
    colour: str,
    even: float | None,
) -> None:
    positions = list(range(len(counts)))
    values = [count for _, count in counts]
    bars = axes.barh(positions, values, height=0.62, color=colour)
    for index, bar in enumerate(bars):
        bar.set_gid(f"{gid}-{index}")
    axes.set_yticks(positions, labels=[name for name, _ in counts])
    axes.grid(axis="y", visible=False)
    axes.tick_params(axis="y", length=0)
    axes.set_ylim(len(counts) - 0.5, -0.5)
    largest = max([*values, int(even or 0), 1])
    axes.set_xlim(0, largest * 1.12)
    for position, value in zip(positions, values, strict=True):
        inside = value > largest * 0.2
        axes.annotate(
            f"{value:,}",
            (value, position),
            xytext=(-5 if inside else 4, 0),
            textcoords="offset points",
            ha="right" if inside else "left",
            va="center",
            fontsize=8.5,
            fontweight="bold" if inside else "normal",
            color="white" if inside else "#374151",
        )
    if even is not None:
        line = axes.axvline(
            even,
            color=_EVEN_COLOUR,
            linestyle=(0, (4, 3)),
            linewidth=1.3,
            label=f"even share: {even:,.0f} per pod",
        )
        line.set_gid("even-share")
        axes.legend(loc="lower left", bbox_to_anchor=(0, 1.0), borderaxespad=0.2)


def bar_chart(
    chart_id: str,
    *,
    title: str,
    counts: Sequence[tuple[str, int]],
    even: float | None,
    xlabel: str,
    colour: str = _PALETTE[0],
) -> Chart:
    """Draw one bar per pod, with the even share as a line when given."""
    with _style():
        figure = Figure(figsize=(5.4, 0.95 + 0.36 * len(counts)))
        axes = figure.add_subplot()
        _draw_bars(axes, counts, gid="bar", colour=colour, even=even)
        axes.set_xlabel(xlabel)
        return Chart(
            chart_id,
            title,
            _svg(figure, chart_id=chart_id, label=f"{title}: {xlabel} per pod"),
        )


def _rates(
    series: Mapping[str, JSON],
) -> tuple[float, dict[str, list[float]], list[float]]:
    """Return the bucket width, requests per second per pod, and failures per second."""
    bucket = _number(series.get("bucket_s")) or 1.0
    pods = {
        name: [(_number(count) or 0.0) / bucket for count in _list(counts)]
        for name, counts in _object(series.get("pods")).items()
    }
    failed = [(_number(count) or 0.0) / bucket for count in _list(series.get("failed"))]
    return bucket, pods, failed


def _while_serving(rates: Sequence[float]) -> list[float]:
    """Blank out a pod's rates before it started serving and after it stopped.

    The zero just before the first answer and just after the last stay, so a
    pod's line rises from and falls to the axis, however short its life.
    """
    served = [i for i, rate in enumerate(rates) if rate > 0]
    if not served:
        return list(rates)
    first, last = served[0] - 1, served[-1] + 1
    return [rate if first <= i <= last else math.nan for i, rate in enumerate(rates)]


def timeline_chart(
    chart_id: str,
    *,
    title: str,
    series: Mapping[str, JSON],
    kills: Sequence[tuple[int, float, float | None]],
) -> Chart:
    """Draw requests per second per pod, with a line at each kill and each Ready.

    ``kills`` holds, per kill, its number in the recovery table, its time in
    seconds after the series' start, and its replacement's Ready after the kill.
    """
    bucket, pods, failed = _rates(series)
    colours = _colours(list(pods))
    with _style():
        figure = Figure(figsize=(8.6, 3.3))
        axes = figure.add_subplot()
        for index, (name, rates) in enumerate(pods.items()):
            (line,) = axes.plot(
                [(i + 0.5) * bucket for i in range(len(rates))],
                _while_serving(rates),
                color=colours[name],
                linewidth=1.5,
                label=name,
            )
            line.set_gid(f"pod-{index}")
        if any(failed):
            bars = axes.bar(
                [i * bucket for i in range(len(failed))],
                failed,
                width=bucket,
                align="edge",
                color=_KILL_COLOUR,
                alpha=0.35,
                label="failed requests",
            )
            for index, bar in enumerate(bars):
                bar.set_gid(f"failed-{index}")
        top = max([1.0, *(max(r, default=0.0) for r in pods.values()), *failed])
        axes.set_ylim(0, top * 1.22)
        for number, killed_s, ready_s in kills:
            kill = axes.axvline(
                killed_s, color=_KILL_COLOUR, linestyle=(0, (4, 2)), linewidth=1.2
            )
            kill.set_gid(f"kill-{number}")
            axes.annotate(
                f"kill {number}",
                (killed_s, top * 1.2),
                xytext=(2, 0),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color=_KILL_COLOUR,
            )
            if ready_s is not None:
                ready = axes.axvline(
                    killed_s + ready_s,
                    color=_READY_COLOUR,
                    linestyle=(0, (1, 1.5)),
                    linewidth=1.5,
                )
                ready.set_gid(f"ready-{number}")
        if kills:
            axes.plot([], [], color=_KILL_COLOUR, linestyle=(0, (4, 2)), label="kill")
            axes.plot(
                [], [], color=_READY_COLOUR, linestyle=(0, (1, 1.5)), label="Ready"
            )
        axes.set_xlabel("seconds since the load started")
        axes.set_ylabel("requests per second")
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        return Chart(
            chart_id,
            title,
            _svg(
                figure,
                chart_id=chart_id,
                label=f"{title}: requests per second per pod, kills and Ready marked",
            ),
        )


def scaling_chart(
    chart_id: str,
    *,
    title: str,
    series: Mapping[str, JSON],
    replicas: Sequence[tuple[float, int]],
) -> Chart:
    """Draw the replica count and the pods answering above each pod's traffic."""
    bucket, pods, _ = _rates(series)
    buckets = max((len(r) for r in pods.values()), default=0)
    end = max(buckets * bucket, max((t for t, _ in replicas), default=0.0) + bucket)
    colours = _colours(list(pods))
    with _style():
        figure = Figure(figsize=(8.6, 4.4))
        top, bottom = figure.subplots(
            2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 2], "hspace": 0.12}
        )
        if replicas:
            times = [t for t, _ in replicas] + [end]
            counts = [n for _, n in replicas]
            (wanted,) = top.step(
                times,
                [*counts, counts[-1]],
                where="post",
                color=_EVEN_COLOUR,
                linewidth=1.8,
                label="replicas asked for",
            )
            wanted.set_gid("replicas")
        answering = [
            sum(1 for rates in pods.values() if i < len(rates) and rates[i] > 0)
            for i in range(buckets)
        ]
        if answering:
            (seen,) = top.step(
                [i * bucket for i in range(buckets + 1)],
                [*answering, answering[-1]],
                where="post",
                color=_PALETTE[0],
                linewidth=1.3,
                linestyle=(0, (3, 2)),
                label="pods answering",
            )
            seen.set_gid("answering")
        top.set_ylabel("pods")
        most = max([1, *(n for _, n in replicas), *answering])
        top.set_ylim(0, most + 0.8)
        top.yaxis.get_major_locator().set_params(integer=True)
        top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)

        if pods:
            times = [i * bucket for i in range(buckets)]
            stacks = bottom.stackplot(
                times,
                [rates + [0.0] * (buckets - len(rates)) for rates in pods.values()],
                labels=list(pods),
                colors=[colours[name] for name in pods],
                step="post",
                alpha=0.85,
                linewidth=0,
            )
            for index, stack in enumerate(stacks):
                stack.set_gid(f"pod-{index}")
        for t, _ in replicas[1:]:
            for axes in (top, bottom):
                axes.axvline(t, color="#9ca3af", linestyle=(0, (1, 2)), linewidth=1)
        bottom.set_xlim(0, end)
        bottom.set_xlabel("seconds since the load started")
        bottom.set_ylabel("requests per second")
        bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        return Chart(
            chart_id,
            title,
            _svg(
                figure,
                chart_id=chart_id,
                label=f"{title}: replicas and requests per second per pod",
            ),
        )


def calls_chart(
    chart_id: str,
    *,
    title: str,
    groups: Sequence[tuple[str, str, Sequence[tuple[str, int]]]],
) -> Chart:
    """Draw one panel of bars per called service; ``groups`` is (gid, title, counts)."""
    shown = [group for group in groups if group[2]]
    with _style():
        height = 0.6 + sum(0.7 + 0.36 * len(g[2]) for g in shown)
        figure = Figure(figsize=(5.4, height))
        panels = figure.subplots(
            len(shown),
            1,
            squeeze=False,
            gridspec_kw={"height_ratios": [len(g[2]) for g in shown]},
        )
        for index, ((gid, heading, counts), axes) in enumerate(
            zip(shown, panels[:, 0], strict=True)
        ):
            _draw_bars(
                axes, counts, gid=f"{gid}-bar", colour=_PALETTE[index], even=None
            )
            axes.set_title(heading, fontsize=9.5)
        panels[-1, 0].set_xlabel("calls from the order service")
        figure.subplots_adjust(hspace=0.6)
        return Chart(
            chart_id,
            title,
            _svg(figure, chart_id=chart_id, label=f"{title}: calls per pod"),
        )


# The sections, one builder per experiment.


def _counts(mapping: Mapping[str, JSON]) -> list[tuple[str, int]]:
    return [
        (name, int(number))
        for name, value in sorted(mapping.items())
        if (number := _number(value)) is not None
    ]


def _load_balancing(experiment: Experiment) -> Section:
    notices: list[str] = []
    panes = []
    figures = []
    for mode, heading in _MODES:
        stats = _object(experiment.statistics.get(mode))
        if mode == "new":
            counts = sorted((pod.name, pod.delta) for pod in experiment.pods)
        else:
            counts = sorted(
                (str(pod.get("name")), int(_number(pod.get("delta")) or 0))
                for pod in map(_object, _list(stats.get("pods")))
            )
        if not stats:
            notices.append(
                f"Load balancing: statistics.{mode} is missing, so the figures of "
                f"'{heading.lower()}' are not shown."
            )
        if not counts:
            notices.append(
                f"Load balancing: no per-pod counts were recorded for "
                f"'{heading.lower()}', so its chart is left out."
            )
        total = sum(count for _, count in counts)
        chart = (
            bar_chart(
                f"chart-load-balancing-{mode}",
                title=heading,
                counts=counts,
                even=total / len(counts),
                xlabel="requests each pod counted",
            )
            if counts and total > 0
            else None
        )
        p_value = _number(stats.get("p_value"))
        ratio = _number(stats.get("max_min_ratio"))
        variation = _number(stats.get("coefficient_of_variation"))
        expected = _number(stats.get("expected_coefficient_of_variation"))
        facts = [
            Fact("requests, n", _figure(float(total)), float(total)),
            Fact("pods, k", str(len(counts)), float(len(counts))),
            Fact("chi-squared p", _p_value(p_value), p_value),
            Fact("max/min", _figure(ratio), ratio),
            Fact(
                "CV (expected)",
                f"{_figure(variation)} ({_figure(expected)})",
                variation,
            ),
        ]
        failures = _number(stats.get("failures"))
        if failures is not None:
            facts.append(Fact("failed requests", _figure(failures), failures))
        rate = _number(stats.get("requests_per_second"))
        if rate is not None:
            facts.append(Fact("requests per second", f"{rate:.0f}", rate))
        reasons = [str(reason) for reason in _list(stats.get("reasons"))]
        if mode == "new":
            passed = stats.get("passed")
            judged = "passed" if passed is True else "failed" if stats else ""
            note = (
                "Judged even: the split is likely under even picks "
                f"(p ≥ {statistics.DEFAULT_MIN_P_VALUE:g}) and the busiest pod "
                f"served at most {statistics.DEFAULT_MAX_RATIO:g} times the idlest."
                if passed is True
                else "Judged uneven: " + " ".join(reasons)
                if reasons
                else ""
            )
        else:
            judged = ""
            note = "Recorded to show the pinning; not judged."
        panes.append(Pane(heading, chart, tuple(facts), note=note, judged=judged))
        if stats:
            figures.append(
                f"{'new connections' if mode == 'new' else 'kept alive'}: "
                f"p = {_p_value(p_value)}, max/min = {_figure(ratio)}"
            )
    return Section(
        key=experiment.name,
        title="Load balancing",
        verdict=experiment.verdict,
        intro=_INTROS["load-balancing"],
        timing=_timing(experiment),
        parameters=_parameters(experiment),
        panes=tuple(panes),
        explanation=_PINNING,
        notices=tuple(notices),
        failure=experiment.failure,
        key_figures="; ".join(figures),
    )


def kill_kind(kill: Kill) -> str:
    """Return "forced" for a deletion without grace, else "graceful"."""
    return "forced" if kill.grace == 0 else "graceful"


def _recovery_table(experiment: Experiment) -> Table:
    replacements = {
        kind: _object(_object(experiment.statistics.get(kind)).get("replacements"))
        for kind, _ in _HEALING_MODES
    }
    rows = []
    for number, kill in enumerate(experiment.kills, start=1):
        kind = kill_kind(kill)
        replacement = replacements.get(kind, {}).get(kill.pod)
        rows.append(
            (
                Cell(str(number), float(number)),
                Cell(kill.pod),
                Cell(kind),
                Cell("—" if kill.grace is None else f"{kill.grace:g} s", kill.grace),
                *(
                    Cell(_seconds(getattr(kill, key)), getattr(kill, key))
                    for key, _ in _STAGES
                ),
                Cell(replacement if isinstance(replacement, str) else "—"),
            )
        )
    foot = []
    for kind, _ in _HEALING_MODES:
        kills = [kill for kill in experiment.kills if kill_kind(kill) == kind]
        if not kills:
            continue
        summaries = [
            _summary([getattr(kill, key) for kill in kills]) for key, _ in _STAGES
        ]
        for label, pick in (("median", 0), ("p95", 1)):
            cells = []
            for summary in summaries:
                value = None if summary is None else summary[pick]
                cells.append(Cell(_seconds(value), value))
            foot.append(
                (
                    Cell(""),
                    Cell(f"{label}, {kind}"),
                    Cell(""),
                    Cell(""),
                    *cells,
                    Cell(""),
                )
            )
    return Table(
        id="recovery",
        caption=(
            "Seconds from each deletion until its replacement was created, "
            "scheduled, running, Ready and first answered a request"
        ),
        columns=(
            "#",
            "deleted pod",
            "kind",
            "grace",
            *(label for _, label in _STAGES),
            "replacement",
        ),
        rows=tuple(rows),
        foot=tuple(foot),
    )


def _summary(values: Sequence[float | None]) -> tuple[float, float] | None:
    """Return the median and p95 of the values that were measured."""
    measured = [v for v in values if v is not None and math.isfinite(v) and v >= 0]
    if not measured:
        return None
    durations = statistics.durations(measured)
    return durations.median, durations.p95


def _self_healing(experiment: Experiment) -> Section:
    notices: list[str] = []
    panes = []
    figures = []
    numbered = list(enumerate(experiment.kills, start=1))
    for kind, heading in _HEALING_MODES:
        series = _object(experiment.series.get(kind))
        stats = _object(experiment.statistics.get(kind))
        kills = [(n, kill) for n, kill in numbered if kill_kind(kill) == kind]
        if not series and not stats and not kills:
            notices.append(
                f"Self-healing: nothing was recorded for the {kind} deletions "
                f"(no series.{kind}, statistics.{kind} or kills)."
            )
            continue
        chart = None
        start = _number(series.get("start"))
        if _object(series.get("pods")) and start is not None:
            chart = timeline_chart(
                f"chart-self-healing-{kind}",
                title=heading,
                series=series,
                kills=[
                    (n, kill.killed_at.timestamp() - start, kill.ready_s)
                    for n, kill in kills
                ],
            )
        else:
            notices.append(
                f"Self-healing: series.{kind} holds no requests per pod, so the "
                f"timeline of the {kind} deletions is left out."
            )
        ready = _summary([kill.ready_s for _, kill in kills])
        first = _summary([kill.first_request_s for _, kill in kills])
        requests = _number(stats.get("requests"))
        failures = _number(stats.get("failures"))
        ratio = _number(stats.get("failure_ratio"))
        ready_median, ready_p95 = ready if ready else (None, None)
        first_median = first[0] if first else None
        facts = [
            Fact("deletions", str(len(kills)), float(len(kills))),
            Fact("Ready, median", _seconds(ready_median), ready_median),
            Fact("Ready, p95", _seconds(ready_p95), ready_p95),
            Fact("first request, median", _seconds(first_median), first_median),
            Fact("requests sent", _figure(requests), requests),
            Fact(
                "failed requests",
                _figure(failures)
                + ("" if ratio is None else f" ({ratio * 100:.2f} %)"),
                failures,
            ),
        ]
        panes.append(Pane(heading, chart, tuple(facts)))
        if ready is not None:
            figures.append(
                f"{kind}: Ready median {ready[0]:.2f} s, p95 {ready[1]:.2f} s, "
                f"{_figure(failures)} failed"
            )
    if not experiment.kills:
        notices.append("Self-healing: no kills were recorded, so there is no table.")
    max_forced = _number(experiment.parameters.get("max_forced_failure_ratio"))
    return Section(
        key=experiment.name,
        title="Self-healing",
        verdict=experiment.verdict,
        intro=_INTROS["self-healing"],
        timing=_timing(experiment),
        parameters=_parameters(experiment),
        panes=tuple(panes),
        tables=(_recovery_table(experiment),) if experiment.kills else (),
        explanation=(
            "A graceful deletion lets the pod stop on its own terms (readiness "
            "turns false, preStop waits for the endpoint to go, in-flight requests "
            "finish) and must lose no request. A forced deletion kills the "
            "container while kube-proxy may still send it connections"
            + (
                f", so up to {max_forced * 100:g} % of the requests may fail."
                if max_forced is not None
                else "."
            )
        ),
        notices=tuple(notices),
        failure=experiment.failure,
        key_figures="; ".join(figures),
    )


def _scaling(experiment: Experiment) -> Section:
    notices: list[str] = []
    stats = experiment.statistics
    series = _object(experiment.series.get("scaling"))
    start = _number(series.get("start"))
    asked = [
        int(n) for n in map(_number, _list(experiment.parameters.get("steps"))) if n
    ]
    steps = [_object(step) for step in _list(stats.get("steps"))]
    replicas: list[tuple[float, int]] = [(0.0, asked[0])] if asked else []
    rows = []
    for number, step in enumerate(steps, start=1):
        began = _number(step.get("began"))
        count = int(_number(step.get("replicas")) or 0)
        offset = None if began is None or start is None else began - start
        if offset is not None:
            replicas.append((offset, count))
        settled = _number(step.get("settled_s"))
        pods = [str(pod) for pod in _list(step.get("pods"))]
        rows.append(
            (
                Cell(str(number), float(number)),
                Cell(str(count), float(count)),
                Cell(_seconds(offset), offset),
                Cell(_seconds(settled), settled),
                Cell(", ".join(pods)),
            )
        )
    chart = None
    if _object(series.get("pods")) and start is not None:
        chart = scaling_chart(
            "chart-scaling",
            title="Replicas and traffic",
            series=series,
            replicas=replicas,
        )
    else:
        notices.append(
            "Scaling: series.scaling holds no requests per pod, so the chart is "
            "left out."
        )
    if not steps:
        notices.append("Scaling: statistics.steps is missing, so there is no table.")

    first = {
        name: _number(value)
        for name, value in _object(stats.get("first_request_after_ready_s")).items()
    }
    requests = _number(stats.get("requests"))
    failures = _number(stats.get("failures"))
    lost = _number(stats.get("failed_after_scale_down"))
    slowest = max((v for v in first.values() if v is not None), default=None)
    facts = (
        Fact("steps", " → ".join(str(n) for n in asked) or "—"),
        Fact("requests sent", _figure(requests), requests),
        Fact("failed requests", _figure(failures), failures),
        Fact("failed after scaling down", _figure(lost), lost),
        Fact("new pods", str(len(first)), float(len(first))),
        Fact("first request after Ready, slowest", _seconds(slowest), slowest),
    )
    tables = []
    if rows:
        tables.append(
            Table(
                id="scaling-steps",
                caption="Each scaling step, timed from the start of the load",
                columns=("#", "replicas", "began at", "settled in", "pods"),
                rows=tuple(rows),
            )
        )
    if first:
        tables.append(
            Table(
                id="scaling-first-requests",
                caption="Seconds from each new pod's Ready to its first answer",
                columns=("new pod", "first request after Ready"),
                rows=tuple(
                    (Cell(name), Cell(_seconds(value), value))
                    for name, value in sorted(first.items())
                ),
            )
        )
    return Section(
        key=experiment.name,
        title="Scaling",
        verdict=experiment.verdict,
        intro=_INTROS["scaling"],
        timing=_timing(experiment),
        parameters=_parameters(experiment),
        panes=(Pane("Replicas and traffic", chart, facts),),
        tables=tuple(tables),
        notices=tuple(notices),
        failure=experiment.failure,
        key_figures=(
            f"replicas {' → '.join(str(n) for n in asked) or 'n/a'}; "
            f"{_figure(failures)} of {_figure(requests)} requests failed, "
            f"{_figure(lost)} after scaling down; first request after Ready "
            f"at most {_seconds(slowest)}"
        ),
    )


def _service_discovery(experiment: Experiment) -> Section:
    notices: list[str] = []
    stats = experiment.statistics
    catalog = _counts(_object(stats.get("catalog_calls")))
    customer = _counts(_object(stats.get("customer_calls")))
    placed = _counts(_object(stats.get("orders_placed")))
    for key, counts in (("catalog_calls", catalog), ("customer_calls", customer)):
        if not counts:
            notices.append(
                f"Service discovery: statistics.{key} is missing or empty, so its "
                "bars are left out."
            )
    chart = (
        calls_chart(
            "chart-service-discovery",
            title="Calls per pod",
            groups=(
                ("catalog", "order → catalog, per catalog pod", catalog),
                ("customer", "order → customer, per customer pod", customer),
            ),
        )
        if catalog or customer
        else None
    )
    lines = _number(stats.get("order_lines"))
    statuses = ", ".join(
        f"HTTP {status}: {_plain(count)}"
        for status, count in _object(stats.get("statuses")).items()
    )
    facts = (
        Fact("orders placed", _figure(float(sum(c for _, c in placed))), None),
        Fact("order lines", _figure(lines), lines),
        Fact("answers", statuses or "—"),
        Fact("catalog calls", _figure(float(sum(c for _, c in catalog))), None),
        Fact("customer calls", _figure(float(sum(c for _, c in customer))), None),
        *(
            Fact(f"placed by {name}", f"{count:,}", float(count))
            for name, count in placed
        ),
    )
    return Section(
        key=experiment.name,
        title="Service discovery",
        verdict=experiment.verdict,
        intro=_INTROS["service-discovery"],
        timing=_timing(experiment),
        parameters=_parameters(experiment),
        panes=(Pane("Calls per pod", chart, facts),),
        notices=tuple(notices),
        failure=experiment.failure,
        key_figures=(
            f"{_figure(float(sum(c for _, c in placed)))} orders; catalog calls "
            + (", ".join(f"{n} {c}" for n, c in catalog) or "none")
            + "; customer calls "
            + (", ".join(f"{n} {c}" for n, c in customer) or "none")
        ),
    )


def _other(experiment: Experiment) -> Section:
    facts = tuple(
        Fact(name.replace("_", " "), _plain(value), _number(value))
        for name, value in experiment.statistics.items()
    )
    return Section(
        key=experiment.name,
        title=experiment.name.replace("-", " ").capitalize(),
        verdict=experiment.verdict,
        intro="An experiment this report has no charts for; its figures follow.",
        timing=_timing(experiment),
        parameters=_parameters(experiment),
        panes=(Pane("Figures", None, facts),) if facts else (),
        failure=experiment.failure,
    )


_BUILDERS = {
    "load-balancing": _load_balancing,
    "self-healing": _self_healing,
    "scaling": _scaling,
    "service-discovery": _service_discovery,
}


def _section(experiment: Experiment) -> Section:
    """Build an experiment's section; a builder that trips on odd data falls back."""
    builder = _BUILDERS.get(experiment.name, _other)
    try:
        return builder(experiment)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        logger.warning("cannot chart experiment %s: %s", experiment.name, e)
        return replace(
            _other(experiment),
            notices=(
                f"{experiment.name}: its figures do not have the expected shape "
                f"({type(e).__name__}: {e}), so only the raw figures are shown.",
            ),
        )


def sections(reading: Reading) -> tuple[Section, ...]:
    """Return a section per expected experiment, then one per other experiment."""
    by_name = {e.name: e for e in reading.experiments}
    built = []
    for key, title in EXPERIMENTS:
        experiment = by_name.pop(key, None)
        if experiment is None:
            built.append(
                Section(
                    key=key,
                    title=title,
                    verdict="missing",
                    intro=_INTROS[key],
                    notices=(
                        f"{title}: the results hold no '{key}' experiment; it did "
                        "not run to its end.",
                    ),
                )
            )
        else:
            built.append(_section(experiment))
    built.extend(_section(experiment) for experiment in by_name.values())
    return tuple(built)


def verdict(reading: Reading, shown: Sequence[Section]) -> tuple[bool, str]:
    """Return whether the run proved its point, and the headline that says so.

    It did when every experiment passed, the run reached its end, and its
    results file followed the schema.
    """
    if not reading.readable:
        return False, f"No results to show: {RESULTS_FILE} cannot be read"
    problems = [
        f"{section.title.lower()} {_VERDICT_WORDS[section.verdict]}"
        for section in shown
        if section.verdict != "passed"
    ]
    if reading.header.ended_at is None:
        problems.append("the run was interrupted")
    if reading.notices:
        problems.append(f"{RESULTS_FILE} does not follow the schema")
    if not problems:
        return True, PASSED_HEADLINE
    return False, "Not proven: " + ", ".join(problems)


@dataclass(frozen=True)
class JUnitSummary:
    """The totals of pytest's JUnit XML for the run."""

    tests: int
    failures: int
    errors: int
    skipped: int
    seconds: float
    #: The tests that failed or erred, by name.
    failing: tuple[str, ...] = ()


def read_junit(path: Path) -> JUnitSummary | None:
    """Read the totals of a JUnit XML file; None when there is none."""
    if not path.is_file():
        return None
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    seconds = 0.0
    failing = []
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
        seconds += float(suite.get("time", "0"))
        for case in suite.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failing.append(f"{case.get('classname', '')}::{case.get('name', '')}")
    return JUnitSummary(**totals, seconds=seconds, failing=tuple(failing))


def _run_facts(header: RunHeader, junit: JUnitSummary | None) -> tuple[Fact, ...]:
    unknown = "not recorded"
    if header.started_at is not None and header.ended_at is not None:
        took = _duration((header.ended_at - header.started_at).total_seconds())
    else:
        took = "unknown: the run did not end"
    facts = [
        Fact("run", header.id),
        Fact("cluster", header.cluster_kind or unknown),
        Fact("Kubernetes", header.kubernetes_version or unknown),
        Fact("harness", header.harness_version or unknown),
        Fact("services (images' tag)", header.services_version or unknown),
        Fact("started", _when(header.started_at)),
        Fact("ended", _when(header.ended_at) if header.ended_at else "did not end"),
        Fact("duration", took),
    ]
    if junit is not None:
        facts.append(
            Fact(
                "tests (junit.xml)",
                f"{junit.tests} run, {junit.failures} failed, {junit.errors} errors, "
                f"{junit.skipped} skipped, in {_duration(junit.seconds)}",
            )
        )
    return tuple(facts)


def _notices(reading: Reading, shown: Sequence[Section]) -> tuple[str, ...]:
    notices = list(reading.notices)
    if reading.readable and reading.header.ended_at is None:
        notices.append(
            "The run has no end time (run.ended_at is null or missing): it was "
            "interrupted or is still going, so later experiments may be missing."
        )
    for section in shown:
        notices.extend(section.notices)
    return tuple(notices)


# Writing the files.


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("harness", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _cell(text: str) -> str:
    """Escape text for a cell of a GitHub-flavoured Markdown table."""
    text = " ".join(text.split())
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|")):
        text = text.replace(raw, escaped)
    return text


def markdown(
    header: RunHeader,
    shown: Sequence[Section],
    *,
    passed: bool,
    headline: str,
    notices: Sequence[str],
    junit: JUnitSummary | None,
) -> str:
    """Return the Markdown summary: the headline, a verdicts table, the notices."""
    lines = [
        f"## kube-harness run {_cell(header.id)}",
        "",
        f"**{'✅' if passed else '❌'} {_cell(headline)}**",
        "",
    ]
    if shown:
        lines += ["| Experiment | Verdict | Key figures |", "| --- | --- | --- |"]
        lines += [
            f"| {_cell(s.title)} | {_MARKDOWN_BADGES.get(s.verdict, s.verdict)} "
            f"| {_cell(s.key_figures) or '—'} |"
            for s in shown
        ]
        lines.append("")
    facts = _run_facts(header, junit)
    lines.append(" · ".join(f"{_cell(f.label)}: {_cell(f.value)}" for f in facts))
    if notices:
        lines += ["", "### Notices", ""]
        lines += [f"- {_cell(notice)}" for notice in notices]
    failing = [s for s in shown if s.failure is not None]
    if failing:
        lines += ["", "### Failures", ""]
        lines += [
            f"- **{_cell(s.title)}**: {_cell(s.failure.message)}"
            for s in failing
            if s.failure is not None
        ]
    return "\n".join(lines) + "\n"


def render(
    run_dir: Path, *, screenshot: bool = False, timeout: float = 60.0
) -> RenderedReport:
    """Write ``index.html`` and ``summary.md`` into a run folder; return their paths.

    With ``screenshot``, also write ``screenshot.png``, a full-page picture of
    the report taken with Chromium (``timeout`` bounds it, in seconds).
    """
    reading = read_results(run_dir)
    folder = run_dir.resolve()
    shown = sections(reading) if reading.readable else ()
    passed, headline = verdict(reading, shown)
    notices = list(_notices(reading, shown))
    try:
        junit = read_junit(folder / JUNIT_FILE)
    except (ElementTree.ParseError, ValueError) as e:
        junit = None
        notices.append(
            f"{JUNIT_FILE} cannot be read ({e}), so its totals are left out."
        )

    page = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            header=reading.header,
            headline=headline,
            passed=passed,
            readable=reading.readable,
            notices=notices,
            sections=shown,
            run_facts=_run_facts(reading.header, junit),
            junit=junit,
        )
    )
    html = folder / HTML_FILE
    html.write_text(page, encoding="utf-8")
    summary = folder / MARKDOWN_FILE
    summary.write_text(
        markdown(
            reading.header,
            shown,
            passed=passed,
            headline=headline,
            notices=notices,
            junit=junit,
        ),
        encoding="utf-8",
    )
    logger.info("wrote the report of run %s to %s", reading.header.id, html)

    picture = None
    if screenshot:
        picture = take_screenshot(html, folder / SCREENSHOT_FILE, timeout=timeout)
    return RenderedReport(
        run_dir=folder,
        html=html,
        markdown=summary,
        screenshot=picture,
        passed=passed,
        headline=headline,
        notices=tuple(notices),
    )


def take_screenshot(
    page: Path, target: Path, *, timeout: float = 60.0, width: int = SCREENSHOT_WIDTH
) -> Path:
    """Save a full-page screenshot of a local HTML file, taken with Chromium.

    The browser is driven from a thread of its own: Playwright's sync API
    refuses a thread that runs an asyncio loop, or another Playwright.
    """
    try:
        from playwright.sync_api import Error
    except ImportError:
        raise PrerequisiteError(
            "playwright is not installed; pip install playwright to take "
            "screenshots (it drives the system's chromium, nothing is downloaded)"
        ) from None
    if not CHROMIUM.is_file():
        raise PrerequisiteError(
            f"{CHROMIUM}: no such browser; install it with apt-get install chromium"
        )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="screenshot") as pool:
        shooting = pool.submit(_shoot, page, target, timeout=timeout, width=width)
        try:
            # Playwright's own timeouts end each step; this bounds the sum.
            shooting.result(timeout=4 * timeout)
        except Error as e:
            text = str(e).strip()
            first = text.splitlines()[0] if text else type(e).__name__
            raise ReportError(
                f"chromium could not take a screenshot of {page}: {first}; check "
                f"that {CHROMIUM} starts headless"
            ) from e
        except TimeoutError:
            raise ReportError(
                f"chromium took more than {4 * timeout:g} s for a screenshot of "
                f"{page}; pass a longer timeout"
            ) from None
    logger.info("saved a screenshot of %s to %s", page, target)
    return target


def _shoot(page: Path, target: Path, *, timeout: float, width: int) -> None:
    from playwright.sync_api import Route, sync_playwright

    def local_only(route: Route) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            logger.warning("blocked a request from the report: %s", route.request.url)
            route.abort()

    milliseconds = timeout * 1000
    with (
        tempfile.TemporaryDirectory(prefix="harness-chromium-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=list(BROWSER_ARGS),
            viewport={"width": width, "height": 900},
            timeout=milliseconds,
        )
        try:
            context.route("**/*", local_only)
            tab = context.new_page()
            tab.goto(page.resolve().as_uri(), timeout=milliseconds)
            tab.screenshot(path=str(target), full_page=True, timeout=milliseconds)
        finally:
            context.close()
