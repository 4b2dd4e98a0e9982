"""The dashboard (docs/web.rst) in a real headless browser: Debian's chromium through its
chromedriver, against a real redis-server, a real beat, a real worker and a real
``celery -A e2e_app redbeat web`` (tests/dashboard_stack.py). Every wait is bounded, for a
condition. The screenshots in docs/images/ are taken here too, only when asked
(``REDBEAT_SCREENSHOTS=1``, or ``./run.sh screenshots``)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import browser  # noqa: E402
import pytest
from conftest import ROOT, project_environment, wait_for  # noqa: E402
from dashboard_stack import Stack, running_stack  # noqa: E402
from selenium.common.exceptions import NoAlertPresentException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.expected_conditions import alert_is_present  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.e2e

WAIT = 20  # seconds: the longest any condition here is waited for
SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = '<img src=x onerror="window.injected=1">'


@pytest.fixture(scope="session")
def chromium():
    """One headless chromium for the session, quit at the end. Missing, the tests skip, but not in
    CI (the variable CI set), where ./run.sh installs it: there a missing browser fails them."""
    browser.require_browser(os.environ)
    driver = browser.start_browser()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("dashboard"), project_environment()) as running:
        yield running


@pytest.fixture(scope="module")
def dashboard(stack: Stack) -> str:
    return stack.start_web("web")


def test_without_chromium_the_browser_tests_skip_but_fail_in_ci(monkeypatch, tmp_path):
    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "chromium")
    with pytest.raises(pytest.skip.Exception, match="chromium not installed"):
        browser.require_browser({})
    with pytest.raises(pytest.fail.Exception, match="CI: .*chromium not installed"):
        browser.require_browser({"CI": "true"})


def until(driver, condition, message: str, timeout: float = WAIT):
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message)


def css(driver, selector: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def redis_cli(stack: Stack, *command: str) -> None:
    """A command sent by redis-cli itself, as someone without Python would write an entry."""
    exe = shutil.which("redis-cli")
    assert exe, "redis-cli is not installed: run the tests through ./run.sh test"
    subprocess.run([exe, "-p", str(stack.server.port), "-n", "0", *command], check=True, timeout=10,
                   stdout=subprocess.DEVNULL)


def raw_entry(stack: Stack, name: str, every: float, label: str | None = None, score: float = 0, **fields) -> None:
    definition = {"name": name, "task": "e2e_app.record", "args": [label or name],
                  "schedule": {"__type__": "interval", "every": every}, **fields}
    stack.schedule.hset(f"redbeat:{name}", "definition", json.dumps(definition))
    stack.schedule.zadd("redbeat::schedule", {f"redbeat:{name}": score})


def published(dashboard: str, name: str) -> int:
    """How many runs of ``name`` beat has published, as the dashboard's API says."""
    with urllib.request.urlopen(f"{dashboard}api/entry?name={urllib.parse.quote(name)}", timeout=10) as reply:
        return int(json.load(reply)["published"])


def open_entry(driver, dashboard: str, name: str) -> None:
    driver.get(f"{dashboard}entry?name={urllib.parse.quote(name)}")
    until(driver, lambda d: css(d, "h1#entry"), f"the entry page of {name}")


def test_the_overview_shows_the_active_beat_s_host_and_pid(chromium, stack, dashboard):
    pid = str(stack.processes.started["beat"].pid)

    def beat_shown(driver) -> bool:
        # Loaded again until beat's first status is in: a page that says "no beat" has no fields to update.
        driver.get(dashboard)
        return bool(css(driver, "#beat-pid")) and css(driver, "#beat-pid")[0].text == pid

    until(chromium, beat_shown, "the beat's pid")
    assert css(chromium, "#beat-host")[0].text == socket.gethostname()
    assert css(chromium, "body")[0].get_attribute("data-page") == "overview"
    assert css(chromium, "#health")[0].get_attribute("data-health") in ("healthy", "degraded")


def test_an_entry_written_with_redis_cli_appears_in_the_open_schedule_page(chromium, stack, dashboard):
    chromium.get(dashboard + "schedule")
    until(chromium, lambda d: css(d, "table#entries"), "the schedule page")
    assert not css(chromium, 'tr.entry-row[data-name="from-redis-cli"]')
    definition = json.dumps({"name": "from-redis-cli", "task": "e2e_app.record", "args": ["from-redis-cli"],
                             "schedule": {"__type__": "interval", "every": 3600}})
    redis_cli(stack, "HSET", "redbeat:from-redis-cli", "definition", definition)
    redis_cli(stack, "ZADD", "redbeat::schedule", "0", "redbeat:from-redis-cli")
    # No reload: the page's own polling (every 5 s) brings the row.
    row = until(chromium, lambda d: css(d, 'tr.entry-row[data-name="from-redis-cli"]'), "the new row")[0]
    assert row.find_element("css selector", "td.task").text == "e2e_app.record"
    wait_for(lambda: stack.runs("from-redis-cli"), timeout=WAIT, message="beat to run the new entry")


def test_pausing_from_the_entry_page_stops_its_runs_at_the_beat(chromium, stack, dashboard):
    raw_entry(stack, "paused-by-page", every=1)
    wait_for(lambda: stack.runs("paused-by-page") >= 2, timeout=WAIT, message="two runs before the pause")
    open_entry(chromium, dashboard, "paused-by-page")
    css(chromium, "#action-pause")[0].click()
    until(chromium, lambda d: css(d, "#said") and "paused" in css(d, "#said")[0].text, "the page to say paused")
    assert json.loads(stack.schedule.hget("redbeat:paused-by-page", "definition"))["enabled"] is False
    published_at_pause = published(dashboard, "paused-by-page")

    # Beat and the worker keep running the static entry (every second) meanwhile. Beat may have been
    # claiming a run of the paused entry during the click: one more at most, then none.
    def static_runs_past(count: int) -> int:
        target = stack.runs("static") + count
        wait_for(lambda: stack.runs("static") >= target, timeout=WAIT, message=f"{count} more static runs")
        return stack.runs("paused-by-page")

    settled = static_runs_past(3)
    assert published(dashboard, "paused-by-page") <= published_at_pause + 1
    assert static_runs_past(3) == settled
    open_entry(chromium, dashboard, "paused-by-page")
    assert css(chromium, "h1#entry")[0].get_attribute("data-state") == "paused"


def test_run_now_from_the_entry_page_makes_the_worker_run_it(chromium, stack, dashboard):
    yearly = {"__type__": "crontab", "minute": "0", "hour": "0", "day_of_month": "1", "month_of_year": "1"}
    raw_entry(stack, "run-by-page", every=0, score=time.time() + 86400, schedule=yearly)
    open_entry(chromium, dashboard, "run-by-page")
    assert stack.runs("run-by-page") == 0
    css(chromium, "#action-run-now")[0].click()
    until(chromium, lambda d: css(d, "#said") and "will run at beat's next tick" in css(d, "#said")[0].text,
          "the page to say it will run")
    wait_for(lambda: stack.runs("run-by-page") == 1, timeout=WAIT, message="the worker to run it")

    def reloaded_history(driver) -> list:
        open_entry(driver, dashboard, "run-by-page")
        return css(driver, "table#history tr.run[data-task-id]")

    [run] = until(chromium, reloaded_history, "the run in the entry's history")
    assert run.get_attribute("data-outcome") == "published"


def test_an_entry_named_like_html_shows_as_text_and_runs_nothing(chromium, stack, dashboard):
    for name in (SCRIPT_NAME, IMG_NAME):
        raw_entry(stack, name, every=3600, label="html", score=time.time() + 3600)
    chromium.get(dashboard + "schedule?sort=name")
    names = until(chromium, lambda d: [a.text for a in css(d, "tr.entry-row td.name a")
                                       if a.text in (SCRIPT_NAME, IMG_NAME)], "the rows named like HTML")
    assert sorted(names) == sorted([SCRIPT_NAME, IMG_NAME])
    assert not css(chromium, "#entries img, #entries script")
    # The page polled (next-run order): its rows are swapped for the server's fresh copy, still text.
    chromium.get(dashboard + "schedule")
    chromium.execute_script("document.getElementById('entry-rows').dataset.before = 'poll'")
    until(chromium, lambda d: d.execute_script("return document.getElementById('entry-rows').dataset.before") is None,
          "the page's next poll")
    assert {SCRIPT_NAME, IMG_NAME} <= {a.text for a in css(chromium, "tr.entry-row td.name a")}
    assert not css(chromium, "#entries img, #entries script")
    for name in (SCRIPT_NAME, IMG_NAME):
        open_entry(chromium, dashboard, name)
        assert css(chromium, "h1#entry")[0].get_attribute("data-name") == name
        assert name in css(chromium, "h1#entry")[0].text
        assert not css(chromium, "#live img, h1 img, td img, script:not([src])")
        assert chromium.execute_script("return window.injected === undefined")
    with pytest.raises(NoAlertPresentException):
        chromium.switch_to.alert.text  # noqa: B018 (reading it is the check)


def test_remove_asks_first_and_only_yes_removes(chromium, stack, dashboard):
    raw_entry(stack, "doomed", every=3600, score=time.time() + 3600)
    open_entry(chromium, dashboard, "doomed")
    css(chromium, "#action-remove")[0].click()
    asked = until(chromium, alert_is_present(), "the confirmation dialog")
    assert "cannot be undone" in asked.text
    asked.dismiss()
    assert stack.schedule.exists("redbeat:doomed") and css(chromium, "h1#entry")
    css(chromium, "#action-remove")[0].click()
    until(chromium, alert_is_present(), "the confirmation dialog").accept()
    until(chromium, lambda d: css(d, "#said") and "doomed" in css(d, "#said")[0].text, "the page to say removed")
    assert not stack.schedule.exists("redbeat:doomed")
    assert stack.schedule.zscore("redbeat::schedule", "redbeat:doomed") is None


FETCH_PAUSE = """
const [name, token, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
const headers = {"Content-Type": "application/json"};
if (token) headers["X-CSRF-Token"] = token;
fetch("api/pause", {method: "POST", headers: headers, credentials: "same-origin", body: JSON.stringify({name: name})})
  .then(r => done(r.status), e => done(String(e)));
"""


def test_a_change_sent_from_the_page_without_the_csrf_token_is_refused(chromium, stack, dashboard):
    raw_entry(stack, "guarded", every=3600, score=time.time() + 3600)
    open_entry(chromium, dashboard, "guarded")
    assert chromium.execute_async_script(FETCH_PAUSE, "guarded", None) == 403
    assert chromium.execute_async_script(FETCH_PAUSE, "guarded", "x" * 43) == 403
    assert "enabled" not in json.loads(stack.schedule.hget("redbeat:guarded", "definition"))
    # The same request with the page's token is accepted: the refusal was the token's.
    token = css(chromium, 'meta[name="csrf-token"]')[0].get_attribute("content")
    assert chromium.execute_async_script(FETCH_PAUSE, "guarded", token) == 200
    assert json.loads(stack.schedule.hget("redbeat:guarded", "definition"))["enabled"] is False


def test_the_read_only_dashboard_shows_no_action(chromium, stack):
    raw_entry(stack, "watched", every=3600, score=time.time() + 3600)
    read_only = stack.start_web("web-read-only", "--read-only")
    open_entry(chromium, read_only, "watched")
    assert css(chromium, "body")[0].get_attribute("data-read-only") == "true"
    assert not css(chromium, "form.action, #actions, #action-edit, #nav-new")
    chromium.get(read_only + "schedule?name=watched")
    until(chromium, lambda d: css(d, 'tr.entry-row[data-name="watched"]'), "the row")
    assert not css(chromium, "form#bulk")


# -- the screenshots in docs/images/ ---------------------------------------------------------------

def realistic_schedule(stack: Stack) -> None:
    """A dozen entries of the kinds people run (with e2e_app's tasks, so the worker runs them):
    intervals with runs that succeed, fail and retry, crontabs in zones, an rrule, a solar one,
    a paused one, a one-off that finishes and one parked for a typo in its crontab."""
    from datetime import datetime, timedelta, timezone

    from celery.schedules import schedule as every
    from celery.schedules import solar
    from conftest import make_app

    from redbeat import RedBeatSchedulerEntry
    from redbeat.schedules import clocked, crontab, rrule

    app = make_app(stack.server.url(0), broker_url=stack.server.url(1))
    Entry = functools.partial(RedBeatSchedulerEntry, app=app)  # noqa: N806 (a class, bound to the app)
    soon = datetime.now(timezone.utc) + timedelta(seconds=2)
    for entry in [
        Entry("heartbeat", "e2e_app.record", every(2), args=["heartbeat"], description="Says the workers are alive"),
        Entry("purge-expired-sessions", "e2e_app.fail", every(3), description="Fails until the DBA grants DELETE"),
        Entry("import-exchange-rates", "e2e_app.retry_once", every(4),
              description="The rates feed: retried once when it is late"),
        Entry("nightly-report", "e2e_app.record", crontab(minute=0, hour=2, timezone="Europe/Paris"),
              args=["nightly-report"], description="Sales of the day, mailed at 02:00 in Paris"),
        Entry("hourly-sync", "e2e_app.record", crontab(minute=15), args=["hourly-sync"]),
        Entry("weekly-digest", "e2e_app.record", crontab(minute=0, hour=8, day_of_week="mon",
                                                          timezone="America/New_York"), args=["weekly-digest"]),
        Entry("month-end-close", "e2e_app.record", rrule("MONTHLY", bymonthday=-1, byhour=23, byminute=30,
                                                          timezone="Europe/London"), args=["month-end-close"]),
        Entry("garden-lights-on", "e2e_app.record", solar("sunset", 48.85, 2.35), args=["garden-lights-on"]),
        Entry("invoice-reminders", "e2e_app.record", crontab(minute=0, hour=9), args=["invoice-reminders"],
              enabled=False, description="Paused while billing moves to the new system"),
        Entry("one-off-migration", "e2e_app.record", clocked(soon), args=["one-off-migration"]),
        Entry("cache-warmup", "e2e_app.record", every(300), args=["cache-warmup"]),
    ]:
        entry.save()
    raw_entry(stack, "legacy-export", every=0, schedule={"__type__": "crontab", "minute": "61", "hour": "3"})


def has_history(stack: Stack) -> bool:
    schedule = stack.schedule
    return (schedule.llen("redbeat::history:heartbeat") >= 4 and schedule.llen("redbeat::history:one-off-migration")
            and schedule.llen("redbeat::history:purge-expired-sessions") >= 2
            and any(b'"succeeded"' in event for event in stack.server.client(0, decode=False).lrange(
                "redbeat::worker-events:import-exchange-rates", 0, -1))
            and schedule.hexists("redbeat:legacy-export", "parked"))


@pytest.mark.skipif(os.environ.get("REDBEAT_SCREENSHOTS") != "1",
                    reason="writes docs/images/: only when asked (REDBEAT_SCREENSHOTS=1, ./run.sh screenshots)")
def test_screenshots_of_the_overview_the_schedule_and_an_entry(chromium, tmp_path):
    images = ROOT / "docs" / "images"
    images.mkdir(exist_ok=True)
    # The page's own size, whatever the window's frame takes: the images are 1280x800.
    width, height = browser.WINDOW
    chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                             {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    with running_stack(tmp_path, project_environment()) as stack:
        realistic_schedule(stack)
        dashboard = stack.start_web("web")
        wait_for(lambda: has_history(stack), timeout=60, message="runs, outcomes and a parked entry")
        chromium.get(dashboard)
        until(chromium, lambda d: css(d, "#beat-pid"), "the overview")
        chromium.save_screenshot(str(images / "dashboard-overview.png"))
        chromium.get(dashboard + "schedule")
        until(chromium, lambda d: len(css(d, "tr.entry-row")) >= 12, "the schedule")
        chromium.save_screenshot(str(images / "dashboard-schedule.png"))
        open_entry(chromium, dashboard, "import-exchange-rates")
        # Taller, down to its recent runs (its definition, last, left out): what the page is for.
        bottom = chromium.execute_script("return document.getElementById('history-section').getBoundingClientRect()"
                                         ".bottom + window.scrollY")
        chromium.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                 {"width": width, "height": min(int(bottom) + 24, 1600), "deviceScaleFactor": 1,
                                  "mobile": False})
        chromium.save_screenshot(str(images / "dashboard-entry.png"))
    chromium.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
