"""The rendered report in a real headless Chromium: drawn, quiet, self-contained.

Debian's ``chromium`` is driven by Playwright for Python (never a browser
Playwright downloads), headless, with the browser's own networking off and a
fresh profile. The page is the report of the real recorded run in
``tests/data/results-real.json``.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from harness import reporting
from harness.results import RESULTS_FILE

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright is not installed: pip install playwright",
)

REAL = Path(__file__).parent / "data" / "results-real.json"
TIMEOUT_MS = 30_000
VIEWPORT = {"width": reporting.SCREENSHOT_WIDTH, "height": 900}
CHARTS = {
    "chart-load-balancing-new",
    "chart-load-balancing-keepalive",
    "chart-self-healing-graceful",
    "chart-self-healing-forced",
    "chart-scaling",
    "chart-service-discovery",
}

pytestmark = [
    pytest.mark.skipif(
        not reporting.CHROMIUM.is_file(),
        reason=f"{reporting.CHROMIUM} is missing: install Debian's chromium "
        "(apt-get install chromium, part of make system)",
    ),
    pytest.mark.timeout(180),
]


@dataclass
class Visit:
    """A page loaded in the browser, with what it did while loading."""

    page: Any
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Start Chromium headless in a fresh profile; close it afterwards."""
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(reporting.CHROMIUM),
            headless=True,
            args=list(reporting.BROWSER_ARGS),
            viewport=VIEWPORT,
            timeout=TIMEOUT_MS,
        )
        try:
            yield context
        finally:
            context.close()


def visit(browser: Any, html: Path) -> Visit:
    """Open a local page, recording every request, console error and dialog."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    seen = Visit(page)
    page.on("request", lambda request: seen.requests.append(request.url))
    page.on(
        "console",
        lambda message: (
            seen.console_errors.append(message.text)
            if message.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda error: seen.page_errors.append(str(error)))

    def dismiss(dialog: Any) -> None:
        seen.dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    page.goto(html.as_uri(), wait_until="load")
    return seen


def make_run(parent: Path, text: str) -> Path:
    folder = parent / "20261203-114933-2771"
    folder.mkdir(parents=True)
    (folder / RESULTS_FILE).write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> reporting.RenderedReport:
    folder = make_run(tmp_path_factory.mktemp("real"), REAL.read_text("utf-8"))
    return reporting.render(folder)


@pytest.fixture(scope="module")
def report_visit(browser: Any, rendered: reporting.RenderedReport) -> Iterator[Visit]:
    seen = visit(browser, rendered.html)
    yield seen
    seen.page.close()


def colours_of(png: Path) -> int:
    with Image.open(png) as image:
        found = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert found is not None
    return len(found)


def test_the_report_loads_without_errors_or_any_request_but_its_own_file(
    report_visit: Visit, rendered: reporting.RenderedReport
) -> None:
    assert report_visit.console_errors == []
    assert report_visit.page_errors == []
    assert report_visit.requests == [rendered.html.as_uri()]
    assert all(url.startswith(("file://", "data:")) for url in report_visit.requests)


def test_the_headline_is_what_a_reader_sees_first(
    report_visit: Visit, rendered: reporting.RenderedReport
) -> None:
    heading = report_visit.page.locator("header#verdict h1")
    box = heading.bounding_box()

    assert heading.inner_text() == rendered.headline
    assert box is not None
    assert box["y"] < VIEWPORT["height"] / 4


def test_every_chart_is_drawn_with_a_size_shapes_and_colours(
    report_visit: Visit, tmp_path: Path
) -> None:
    page = report_visit.page
    charts = page.locator("svg.chart")
    ids = [charts.nth(i).get_attribute("id") for i in range(charts.count())]

    assert sorted(ids) == sorted(CHARTS)
    for index, chart_id in enumerate(ids):
        chart = charts.nth(index)
        chart.scroll_into_view_if_needed()
        box = chart.bounding_box()
        assert box is not None, chart_id
        assert box["width"] > 200, chart_id
        assert box["height"] > 100, chart_id
        drawn = chart.evaluate(
            "svg => [...svg.querySelectorAll('path')]"
            ".filter(p => p.getBBox().width > 0 || p.getBBox().height > 0).length"
        )
        assert drawn > 10, chart_id
        labels = chart.evaluate(
            "svg => [...svg.querySelectorAll('text')]"
            ".filter(t => t.getComputedTextLength() > 0).length"
        )
        assert labels > 5, chart_id
        picture = tmp_path / f"{chart_id}.png"
        chart.screenshot(path=str(picture))
        assert colours_of(picture) > 8, chart_id


def test_a_full_page_screenshot_is_kept_in_the_run_folder(
    report_visit: Visit, rendered: reporting.RenderedReport
) -> None:
    target = rendered.run_dir / reporting.SCREENSHOT_FILE

    report_visit.page.screenshot(path=str(target), full_page=True)

    with Image.open(target) as image:
        width, height = image.size
    assert width == VIEWPORT["width"]
    assert height > 3 * VIEWPORT["height"]
    assert colours_of(target) > 50


def test_render_with_a_screenshot_keeps_one_for_a_real_run(tmp_path: Path) -> None:
    folder = make_run(tmp_path, REAL.read_text("utf-8"))

    rendered = reporting.render(folder, screenshot=True, timeout=60)

    assert rendered.screenshot == folder.resolve() / reporting.SCREENSHOT_FILE
    with Image.open(rendered.screenshot) as image:
        assert image.format == "PNG"
        assert image.size[0] == reporting.SCREENSHOT_WIDTH
        assert image.size[1] > 3 * VIEWPORT["height"]


def test_a_hostile_log_tail_is_shown_as_text_and_never_runs(
    browser: Any, tmp_path: Path
) -> None:
    document = json.loads(REAL.read_text("utf-8"))
    hostile = "<script>alert('from a log')</script><img src=x onerror=alert(2)>"
    scaling = next(e for e in document["experiments"] if e["name"] == "scaling")
    scaling["verdict"] = "failed"
    scaling["failure"] = {
        "message": hostile,
        "events": [hostile],
        "logs": {"catalog-0": hostile},
    }
    rendered = reporting.render(make_run(tmp_path, json.dumps(document)))

    seen = visit(browser, rendered.html)
    try:
        tails = seen.page.locator("section#scaling details pre")
        for i in range(tails.count()):
            tails.nth(i).evaluate("pre => pre.parentElement.open = true")
        texts = [tails.nth(i).inner_text() for i in range(tails.count())]
        assert hostile in texts
        assert seen.dialogs == []
        assert seen.page_errors == []
        assert all(url.startswith(("file://", "data:")) for url in seen.requests)
    finally:
        seen.page.close()


def test_an_unreadable_results_file_gives_a_page_that_says_so(
    browser: Any, tmp_path: Path
) -> None:
    text = REAL.read_text("utf-8")
    rendered = reporting.render(make_run(tmp_path, text[: len(text) // 2]))

    seen = visit(browser, rendered.html)
    try:
        assert seen.page.locator("header#verdict h1").inner_text() == (
            "No results to show: results.json cannot be read"
        )
        notices = seen.page.locator("aside#notices").inner_text()
        assert "results.json is not valid JSON" in notices
        assert seen.console_errors == []
    finally:
        seen.page.close()
