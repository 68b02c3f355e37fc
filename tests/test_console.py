"""The operator console in a real browser (Playwright driving the system's Chromium) against a real
`crewrun up` with API keys: sign in, filter executions, read a failed execution's error card, replay
and discard dead letters, resume a paused execution, reset an open breaker, read the error trend
chart's numbers, read an execution's cost, structured output and steps (its LLM and tool calls),
reject and approve a task's output awaiting feedback, work the console with the keyboard alone, and
fit a phone's screen.

The stack is shared by the module (one `crewrun up` whose workers carry the repository's example
Python project, as `crewrun up --demo` does; seeded once through the API and the simulator's fault
script); each test opens its own browser context and signs in. Screenshots of every view go to
a directory the module prints and to /tmp/console-screenshots/."""

from __future__ import annotations

import re
import shutil
import signal
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, ViewportSize, expect, sync_playwright

from backend.api.app import create_app
from backend.demo import DEMO_CREWS, PYTHON_EXAMPLE, with_demo_crews
from backend.ports import free_port, port_is_free
from backend.settings import Settings
from tests.postgres import migrated_sqlite
from tests.support import ServedApp, crewrun_up, healthy, research_spec, stack_settings, wait_for

pytestmark = pytest.mark.e2e

KEY = "console-test-key-3f9a"
CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections (updates, sync, variations)
# are refused by a closed network and it stalls; --disable-quic keeps it on plain TCP to loopback.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DESKTOP: ViewportSize = {"width": 1280, "height": 900}
PHONE: ViewportSize = {"width": 390, "height": 844}
SHARED_SCREENSHOTS = Path("/tmp/console-screenshots")
# Fast retries for the seeded crews: the waits are the faults', not the backoff's.
QUICK_RETRY = {
    c: {"initial_interval_s": 0.2, "maximum_interval_s": 0.5} for c in ("network", "external_service")
}
BREAKER_SERVICE = "console-provider"
TIMEOUT_MS = 30_000


@dataclass
class Seeded:
    """What the module's stack holds before the first test: ids of the executions each test uses."""

    api: str
    sim: str
    failed: list[str] = field(default_factory=list)  # failed for good, each with an open dead letter
    paused: str = ""  # paused on a refused key (401)
    breaker_parked: str = ""  # parked behind the open breaker of BREAKER_SERVICE
    completed: str = ""  # on a model without a known price: its cost is unknown, not free
    desk: str = ""  # the example project's research-desk, completed: LLM and tool calls, a structured output
    reviewed: str = ""  # its research-desk-reviewed, awaiting feedback on summary_task


def _client(api: str) -> httpx.Client:
    return httpx.Client(base_url=api, headers={"Authorization": f"Bearer {KEY}"}, timeout=30)


def seed(api_url: str, sim_url: str, breaker_failures: int = 5) -> Seeded:
    """The demo's kinds of executions, through the API and the simulator's fault script: two that
    fail for good on a content-policy refusal (each leaves a dead letter), one paused on a 401, one
    whose provider answers 503 until its breaker opens, one that just completes; and two of the
    example Python project: one that completes, one whose summary awaits a person's feedback."""
    run = uuid.uuid4().hex[:6]
    seeded = Seeded(api_url, sim_url)
    faults = [
        {"kind": "content_policy", "agent": f"dl1{run}-writer", "count": 1},
        {"kind": "content_policy", "agent": f"dl2{run}-writer", "count": 1},
        {"kind": "auth", "agent": f"pa{run}-analyst", "count": 1},
        {"kind": "server_error", "agent": f"cb{run}-researcher", "count": breaker_failures, "status": 503},
    ]
    httpx.post(f"{sim_url}/_sim/faults", json={"rules": faults}, timeout=10).raise_for_status()
    with _client(api_url) as api:

        def start(prefix: str, name: str, **llm: Any) -> str:
            spec = research_spec(lambda a: f"{sim_url}/agents/{prefix}{run}-{a}/v1", name=name, **llm)
            spec["retry"] = QUICK_RETRY
            crew = api.post("/api/v1/crews", json=spec)
            crew.raise_for_status()
            started = api.post(
                "/api/v1/executions", json={"crew_id": crew.json()["id"], "inputs": {"topic": prefix}}
            )
            started.raise_for_status()
            return str(started.json()["id"])

        seeded.failed = [start("dl1", f"reports-{run}"), start("dl2", f"digests-{run}")]
        seeded.paused = start("pa", f"briefs-{run}")
        seeded.breaker_parked = start("cb", f"surveys-{run}", service=BREAKER_SERVICE)
        seeded.completed = start("ok", f"summaries-{run}", model="acme-unpriced-1")

        # Python crews are listed once a worker that carries them has started.
        project = {"research-desk", "research-desk-reviewed"}
        wait_for(
            lambda: (
                project
                <= {c["name"] for c in api.get("/api/v1/crews", params={"limit": 500}).json()["items"]}
            ),
            60,
            "the example project's crews",
            most_s=0.3,
        )

        def start_python(crew_name: str) -> str:
            body = {"crew_name": crew_name, "inputs": {"topic": f"tidal energy {run}"}}
            started = api.post("/api/v1/executions", json=body)
            started.raise_for_status()
            return str(started.json()["id"])

        seeded.desk, seeded.reviewed = start_python("research-desk"), start_python("research-desk-reviewed")

        def status(execution_id: str) -> str:
            return str(api.get(f"/api/v1/executions/{execution_id}").json()["status"])

        def letters() -> set[str]:
            items = api.get("/api/v1/dead-letters", params={"status": "open", "limit": 500}).json()["items"]
            return {d["execution_id"] for d in items}

        def breaker_open() -> bool:
            states = {b["service"]: b["state"] for b in api.get("/api/v1/circuit-breakers").json()}
            return states.get(BREAKER_SERVICE) == "open"

        wait_for(lambda: set(seeded.failed) <= letters(), 60, "two dead letters", most_s=0.3)
        wait_for(lambda: status(seeded.paused) == "paused", 60, "the paused execution", most_s=0.3)
        wait_for(breaker_open, 60, "the breaker to open", most_s=0.3)
        wait_for(lambda: status(seeded.completed) == "completed", 60, "the completed execution", most_s=0.3)
        wait_for(lambda: status(seeded.desk) == "completed", 60, "research-desk to complete", most_s=0.3)
        wait_for(lambda: status(seeded.reviewed) == "awaiting_feedback", 60, "the review", most_s=0.3)
    return seeded


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    tmp = tmp_path_factory.mktemp("console-stack")
    settings = stack_settings(tmp, migrated_sqlite(tmp / "crewrun.db"))
    api, sim = f"http://127.0.0.1:{settings.api_port}", f"http://127.0.0.1:{settings.simulator_port}"
    log = tmp / "up.log"
    # The workers carry the example Python project, its LLM and search service the simulator (what
    # `crewrun up --demo` does).
    _, project_env = with_demo_crews(settings)
    crews = [arg for name, ref in DEMO_CREWS.items() for arg in ("--crew", f"{name}={ref}")]
    project = [*crews, "--crew-path", str(PYTHON_EXAMPLE)]
    # A long cooldown: the breaker stays open until the console resets it.
    up = crewrun_up(
        settings, log, *project, CREWRUN_API_KEYS=KEY, CREWRUN_BREAKER_COOLDOWN_S="600", **project_env
    )
    try:
        wait_for(lambda: healthy(api), 90, f"crewrun up ({log})")
        yield seed(api, sim, settings.breaker_consecutive_failures)
    finally:
        up.send_signal(signal.SIGTERM)
        assert up.wait(60) == 0
    wait_for(lambda: port_is_free("127.0.0.1", settings.api_port), 15, "the API to stop")


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"no {CHROMIUM}: apt-get install chromium (.ci/run does)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Page, str], None]:
    directory = tmp_path_factory.mktemp("screenshots")
    SHARED_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {directory} (copied to {SHARED_SCREENSHOTS})")

    def take(page: Page, name: str) -> None:
        path = directory / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copyfile(path, SHARED_SCREENSHOTS / path.name)

    return take


class Console:
    """One browser context on the console, with the page's errors collected: an uncaught exception,
    a refused resource (a Content-Security-Policy violation, say) or an unexpected error answer
    fails the test."""

    def __init__(
        self, browser: Browser, api: str, viewport: ViewportSize, expected: tuple[int, ...] = (401,)
    ) -> None:
        self.context = browser.new_context(viewport=viewport)
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.url = f"{api}/console/"
        self.errors: list[str] = []
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        # The browser logs every non-2xx fetch: the answers a test expects (401s before signing in)
        # are not errors of the console.
        self.expected = tuple(f"status of {status}" for status in expected)
        self.page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error" and not any(e in message.text for e in self.expected):
            self.errors.append(message.text)

    def open(self, view: str = "executions") -> Page:
        self.page.goto(f"{self.url}#/{view}")
        return self.page

    def sign_in(self, view: str = "executions") -> Page:
        page = self.open(view)
        page.get_by_label("API key").fill(KEY)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("button", name="Sign out")).to_be_visible()
        return page

    def heading(self, text: str) -> None:
        expect(self.page.get_by_role("heading", level=1)).to_contain_text(text)

    def close(self) -> None:
        self.context.close()
        assert self.errors == []


@pytest.fixture
def console(stack: Seeded, browser: Browser) -> Iterator[Console]:
    opened = Console(browser, stack.api, DESKTOP)
    yield opened
    opened.close()


def test_the_console_is_served_without_a_key_and_its_data_needs_one(stack: Seeded) -> None:
    with httpx.Client(base_url=stack.api, timeout=10) as anonymous:
        assert anonymous.get("/console").headers["location"] == "console/"
        page = anonymous.get("/console/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        for path, kind in (
            ("static/js/app.js", "javascript"),
            ("static/console.css", "text/css"),
            ("static/vendor/chart.umd.min.js", "javascript"),
        ):
            served = anonymous.get(f"/console/{path}")
            assert served.status_code == 200 and kind in served.headers["content-type"], path
        deep = anonymous.get("/console/executions/abc", params={"x": "1"})
        assert deep.status_code == 307 and deep.headers["location"] == "../#/executions/abc?x=1"
        assert anonymous.get("/console/static/nothing.js").status_code == 404
        assert anonymous.get("/api/v1/executions").status_code == 401  # the data is keyed as ever
        assert anonymous.get("/consolex").status_code == 401  # only the console's own paths are open


def test_without_keys_no_sign_in_and_problems_are_shown_with_their_code(
    browser: Browser, tmp_path: Path, screenshots: Callable[[Page, str], None]
) -> None:
    # An API of its own, without keys (and with no Temporal to reach): what a local operator meets.
    settings = Settings(
        data_dir=tmp_path,
        database_url=migrated_sqlite(tmp_path / "crewrun.db"),
        temporal_address=f"127.0.0.1:{free_port()}",
    )
    with ServedApp(create_app(settings, reconcile=False)) as api:
        keyless = Console(browser, api, DESKTOP, expected=(404, 422, 503))  # 503: /health, no Temporal
        try:
            page = keyless.open()
            keyless.heading("Executions")
            expect(page.get_by_text("Executions, newest first: no execution matches.")).to_be_visible()
            expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
            expect(page.locator("#health")).to_have_text("API degraded: temporal down")
            keyless.open("executions/no-such-execution")
            keyless.heading("Could not load this view")
            expect(page.locator(".problem")).to_contain_text(
                "EXECUTION_NOT_FOUND no execution 'no-such-execution'"
            )
            screenshots(page, "10-problem-not-found")
            keyless.open("executions?status=weird")
            expect(page.locator(".problem")).to_contain_text("REQUEST_INVALID")
            expect(page.locator(".problem li")).to_contain_text("query.status")
            keyless.errors = [
                e for e in keyless.errors if "status of 404" not in e and "status of 422" not in e
            ]
        finally:
            keyless.close()


def test_sign_in_refuses_a_wrong_key_and_accepts_a_right_one(
    console: Console, screenshots: Callable[[Page, str], None]
) -> None:
    page = console.open()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.locator(".sign-in-reason")).to_contain_text("needs an API key")
    expect(page.get_by_label("API key")).to_be_focused()
    screenshots(page, "01-sign-in")
    page.get_by_label("API key").fill("not-the-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".sign-in-reason")).to_contain_text("refused this key (UNAUTHORIZED")
    page.get_by_label("API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    console.heading("Executions")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()


def test_every_view_fits_a_phone(
    stack: Seeded, browser: Browser, screenshots: Callable[[Page, str], None]
) -> None:
    views = {
        "executions": "Executions",
        f"executions/{stack.failed[0]}": f"Execution {stack.failed[0][:8]}",
        "paused": "Paused executions",
        "dead-letters": "Dead letters",
        "errors": "Errors",
        "breakers": "Circuit breakers",
        "alerts": "Alerts",
        "feedback": "Awaiting feedback",
    }
    phone = Console(browser, stack.api, PHONE)
    try:
        page = phone.sign_in()
        for number, (view, title) in enumerate(views.items(), start=1):
            phone.open(view)
            phone.heading(title)
            expect(page.locator("main .view")).to_be_visible()
            _fits(page, view)
            screenshots(page, f"phone-{number}-{view.split('/')[0]}{'-one' if '/' in view else ''}")
    finally:
        phone.close()


def _fits(page: Page, view: str) -> None:
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{view} is {overflow}px wider than the phone"


def _both_sizes(page: Page, screenshots: Callable[[Page, str], None], name: str) -> None:
    """Screenshots of the view at 1280 px and on a phone (which it must fit), then 1280 px again."""
    screenshots(page, name)
    page.set_viewport_size(PHONE)
    _fits(page, name)
    screenshots(page, f"phone-{name}")
    page.set_viewport_size(DESKTOP)


def test_filter_failed_executions_and_read_the_error_card(
    console: Console, stack: Seeded, screenshots: Callable[[Page, str], None]
) -> None:
    page = console.sign_in()
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(f"{console.url}#/executions?status=failed")
    table = page.get_by_role("table")
    expect(table.get_by_role("rowheader")).to_have_count(2)
    expect(table.locator("tbody .badge")).to_have_text(["failed", "failed"])
    screenshots(page, "02-executions-failed")

    with _client(stack.api) as api:
        failed = api.get(f"/api/v1/executions/{stack.failed[0]}").json()
    row = table.get_by_role("row").filter(has=page.get_by_role("link", name=stack.failed[0][:8], exact=True))
    expect(row.get_by_role("link", name="Temporal Web UI")).to_have_attribute(
        "href", failed["temporal_ui_url"]
    )
    row.get_by_role("link", name=stack.failed[0][:8], exact=True).click()
    console.heading(f"Execution {stack.failed[0][:8]}")
    card = page.get_by_role("region", name="Why it failed")
    expect(card.locator(".error-code")).to_have_text(failed["error"]["code"])
    expect(card.locator(".error-category")).to_have_text("content_policy")
    expect(card.locator(".error-message")).to_have_text(failed["error"]["message"])
    expect(card).to_contain_text("What to do")
    expect(page.get_by_role("table", name="Tasks in order").locator("tbody .badge")).to_have_text(
        ["completed", "completed", "failed"]
    )
    # Its refused call is in the steps, live and failed (in words), with the error's code.
    calls = page.get_by_role("table", name="LLM and tool calls, in the order they were made")
    refused = calls.get_by_role("row").filter(has_text="live, failed")
    expect(refused.locator("td[data-label='Error']")).to_have_text(failed["error"]["code"])
    expect(refused.locator("td[data-label='Cost']")).to_have_text("unknown")  # no usage came back
    screenshots(page, "03-execution-failed")

    # The error-category filter (an API filter): the paused execution's failed attempt was a 401.
    console.open("executions?error_category=authentication")
    expect(page.get_by_role("table").get_by_role("rowheader")).to_have_text([stack.paused[:8]])


def test_replay_a_dead_letter_and_watch_the_new_execution_complete(
    console: Console, stack: Seeded, screenshots: Callable[[Page, str], None]
) -> None:
    page = console.sign_in("dead-letters")
    console.heading("Dead letters")
    screenshots(page, "04-dead-letters")
    letter = page.get_by_role("article").filter(
        has=page.get_by_role("link", name=stack.failed[0][:8], exact=True)
    )
    expect(letter).to_contain_text("research, analyse")  # what the replay reuses
    letter.get_by_label("Inputs patch (JSON object, optional)").fill('{"topic": "replayed"}')
    letter.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("status")).to_contain_text("replayed: new execution")
    console.heading("Execution")
    expect(page.get_by_role("heading", level=1).locator(".badge")).to_have_text("completed")
    expect(page.get_by_role("table", name="Tasks in order").locator("tbody .badge")).to_have_text(
        ["completed", "completed", "completed"]
    )
    screenshots(page, "05-replayed-execution-completed")


def test_resume_the_paused_execution_and_watch_it_complete(
    console: Console, stack: Seeded, screenshots: Callable[[Page, str], None]
) -> None:
    page = console.sign_in("paused")
    console.heading("Paused executions")
    card = page.get_by_role("article").filter(has_text=f"Execution {stack.paused[:8]}")
    expect(
        card.get_by_role("region", name="Why task analyse stopped").locator(".error-category")
    ).to_have_text("authentication")
    screenshots(page, "06-paused")
    card.get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text("Resume accepted")
    console.open(f"executions/{stack.paused}")
    expect(page.get_by_role("heading", level=1).locator(".badge")).to_have_text("completed")


def test_reset_the_open_breaker(console: Console, screenshots: Callable[[Page, str], None]) -> None:
    page = console.sign_in("breakers")
    row = page.get_by_role("row").filter(has_text=BREAKER_SERVICE)
    expect(row.locator(".badge")).to_have_text("open")
    screenshots(page, "07-breakers-open")
    row.get_by_role("button", name=f"Reset the breaker of {BREAKER_SERVICE}").click()
    expect(page.get_by_role("status")).to_contain_text(f"Circuit breaker of {BREAKER_SERVICE} reset: closed")
    expect(row.locator(".badge")).to_have_text("closed")


def _chart_counts(page: Page) -> dict[str, int]:
    datasets = page.evaluate(
        "() => Chart.getChart(document.getElementById('trend-chart')).data.datasets"
        ".map(d => [d.label, d.data.reduce((a, b) => a + b, 0)])"
    )
    return {label: total for label, total in datasets}


def test_the_error_trend_chart_counts_the_seeded_errors(
    console: Console, screenshots: Callable[[Page, str], None]
) -> None:
    page = console.sign_in("errors")
    console.heading("Errors")
    expect(page.locator("#trend-chart")).to_be_visible()
    page.wait_for_function("() => window.Chart && Chart.getChart(document.getElementById('trend-chart'))")
    counts = _chart_counts(page)
    # Five 503s opened the breaker; two content-policy refusals; one refused key.
    assert counts["external_service"] >= 5 and counts["content_policy"] >= 2 and counts["authentication"] >= 1
    expect(
        page.get_by_role("table", name="Error groups of the last 24 hours, most frequent first")
    ).to_be_visible()
    screenshots(page, "08-errors")

    page.get_by_label("Window").select_option("1h")
    page.get_by_role("button", name="Show").click()
    expect(page.get_by_role("heading", name="Errors per category, last hour")).to_be_visible()
    page.wait_for_function("() => Chart.getChart(document.getElementById('trend-chart'))")
    assert _chart_counts(page) == counts  # the same errors, in 5-minute buckets


def test_alerts_show_their_delivery(console: Console, screenshots: Callable[[Page, str], None]) -> None:
    page = console.sign_in("alerts")
    table = page.get_by_role("table", name="Alerts, newest first")
    expect(table.get_by_role("row").filter(has_text="circuit-opened")).not_to_have_count(0)
    expect(table.get_by_role("row").filter(has_text="dead-letter")).not_to_have_count(0)
    screenshots(page, "09-alerts")


def _tab_to(page: Page, test: str, key: str = "Tab", most: int = 40) -> None:
    """Presses ``key`` until the focused element passes ``test`` (JS, of ``e``): fails if it never does."""
    for _ in range(most):
        page.keyboard.press(key)
        if page.evaluate(f"() => {{ const e = document.activeElement; return {test}; }}"):
            # Wherever the keyboard is, the eye can follow it.
            assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") != "none"
            return
    raise AssertionError(f"{key} never reached an element where {test}")


def test_the_console_works_with_the_keyboard_alone(console: Console, stack: Seeded) -> None:
    page = console.sign_in()
    page.on("dialog", lambda dialog: dialog.accept())  # the discard's confirmation, answered with Enter
    console.heading("Executions")
    _tab_to(page, "e.textContent === 'Dead letters'", key="Shift+Tab")
    page.keyboard.press("Enter")
    console.heading("Dead letters")
    expect(page.get_by_role("heading", level=1)).to_be_focused()  # where a screen reader starts
    _tab_to(page, "e.textContent === 'Skip to content'", key="Shift+Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_in_viewport()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()
    letter = _open_letter(stack, stack.failed[1])
    _tab_to(page, f"e.dataset.key === 'discard-{letter}'")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_contain_text(f"Dead letter {letter[:8]} discarded")
    with _client(stack.api) as api:
        assert api.get(f"/api/v1/dead-letters/{letter}").json()["status"] == "discarded"


def _open_letter(stack: Seeded, execution_id: str) -> str:
    with _client(stack.api) as api:
        letters = api.get("/api/v1/dead-letters", params={"status": "open", "limit": 500}).json()["items"]
    return str(next(d["id"] for d in letters if d["execution_id"] == execution_id))


def test_an_execution_shows_its_cost_structured_output_and_steps(
    console: Console, stack: Seeded, screenshots: Callable[[Page, str], None]
) -> None:
    with _client(stack.api) as api:
        desk = api.get(f"/api/v1/executions/{stack.desk}").json()
        steps = api.get(f"/api/v1/executions/{stack.desk}/steps").json()["items"]
    assert {"llm", "tool"} <= {s["kind"] for s in steps} and desk["cost"]["tokens_in"] > 0
    page = console.sign_in(f"executions/{stack.desk}")
    console.heading(f"Execution {stack.desk[:8]}")

    cost = page.get_by_role("region", name="Cost")
    expect(cost.locator(".tokens-in")).to_have_text(f"{desk['cost']['tokens_in']:,}")
    expect(cost.locator(".tokens-out")).to_have_text(f"{desk['cost']['tokens_out']:,}")
    expect(cost.locator(".cost-usd")).to_have_text(re.compile(r"^\$0\.0*[1-9]"))  # gpt-4o-mini has a price
    expect(cost.locator(".wasted-usd")).to_have_text("$0.00")
    tasks = page.get_by_role("table", name="Tasks in order")
    expect(tasks.locator("td[data-label='Cost'] .sub")).to_have_text(
        [f"{t['cost']['tokens_in']:,} / {t['cost']['tokens_out']:,} tokens" for t in desk["tasks"]]
    )

    summary = desk["tasks"][-1]
    output = page.locator("details").filter(has_text=f"Output of {summary['name']}")
    expect(output.locator(".structured-output")).to_contain_text('"key_points": [')
    expect(output.locator(".output-file")).to_have_text(summary["output_file"])

    calls = page.get_by_role("table", name="LLM and tool calls, in the order they were made")
    expect(calls.locator("thead th[scope=col]")).to_have_count(11)
    expect(calls.locator("tbody th[scope=row]")).to_have_text([str(n) for n in range(1, len(steps) + 1)])
    expect(calls.locator("td[data-label='Kind']")).to_have_text([s["kind"] for s in steps])
    expect(calls.locator("td[data-label='Name']")).to_have_text([s["name"] for s in steps])
    expect(calls.locator("td[data-label='Served']")).to_have_text(["live"] * len(steps))
    tool = calls.get_by_role("row").filter(has_text="web_search")
    expect(tool.locator("td[data-label='Cost']")).to_have_text("—")  # a tool call has no price
    _both_sizes(page, screenshots, "11-execution-cost-steps")

    # Tokens spent on a model without a known price: the API counts 0 USD, the console says unknown.
    console.open(f"executions/{stack.completed}")
    expect(page.get_by_role("region", name="Cost").locator(".cost-usd")).to_have_text(
        "unknown (no known price)"
    )
    expect(page.get_by_role("region", name="Cost").locator(".tokens-in")).not_to_have_text("0")
    calls = page.get_by_role("table", name="LLM and tool calls, in the order they were made")
    expect(calls.locator("td[data-label='Cost']")).to_have_text(["unknown"] * 3)


def test_reject_a_review_with_feedback_then_approve_it(
    console: Console, stack: Seeded, screenshots: Callable[[Page, str], None]
) -> None:
    page = console.sign_in("feedback")
    console.heading("Awaiting feedback")
    card = page.get_by_role("article").filter(has_text=f"Execution {stack.reviewed[:8]}")
    review = card.get_by_role("region", name="Task summary_task awaits review", exact=True)
    expect(review.locator(".structured-output")).to_contain_text('"key_points": [')
    _both_sizes(page, screenshots, "12-feedback-awaiting")

    feedback = card.get_by_label("Feedback (required)")
    card.get_by_role("button", name="Reject").click()  # a rejection says what to change
    expect(page.get_by_role("alert")).to_contain_text("FEEDBACK_REQUIRED")
    expect(feedback).to_be_focused()
    feedback.fill("mention the spring tides")
    card.get_by_role("button", name="Reject").click()
    expect(page.get_by_role("status")).to_contain_text("Output of task summary_task rejected")

    # The task runs again with the feedback and waits again: the view follows the list.
    again = card.get_by_role("region", name="Task summary_task awaits review · revision 1")
    expect(again.get_by_role("table", name="Decisions on summary_task, oldest first")).to_contain_text(
        "rejected"
    )
    expect(again).to_contain_text("mention the spring tides")
    screenshots(page, "13-feedback-revision-1")
    card.get_by_role("button", name="Approve").click()
    expect(page.get_by_role("status")).to_contain_text("Output of task summary_task approved")

    console.open(f"executions/{stack.reviewed}")
    expect(page.get_by_role("heading", level=1).locator(".badge")).to_have_text("completed")
    decisions = page.get_by_role("table", name="Decisions on summary_task, oldest first")
    expect(decisions.locator("td[data-label='Decision']")).to_have_text(["rejected", "approved"])
    with _client(stack.api) as api:
        body = api.get(f"/api/v1/executions/{stack.reviewed}").json()
    decided = [(d["revision"], d["approved"], d["feedback"]) for d in body["tasks"][-1]["feedback"]]
    assert decided == [(0, False, "mention the spring tides"), (1, True, "")]
