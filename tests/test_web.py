"""The web dashboard (docs/web.rst) over HTTP, against the session's real redis-server:
starlette's TestClient for the pages, the API and the guards, and one real ``redbeat web``
process fetched over a socket. The headless-browser tests live elsewhere."""

from __future__ import annotations

import html
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from celery.schedules import schedule as every  # noqa: E402
from conftest import wait_for  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from redbeat import RedBeatSchedulerEntry  # noqa: E402
from redbeat.schedules import crontab  # noqa: E402
from redbeat.web import create_app  # noqa: E402
from redbeat.web.readings import Reading  # noqa: E402

LOCAL = "http://127.0.0.1"
HTML_NAME = "<script>alert(1)</script>"


def client(app, **options) -> TestClient:
    return TestClient(create_app(app, **options), base_url=LOCAL)


def token(web: TestClient) -> str:
    return web.get("/api/csrf").json()["token"]


def add(app, name: str, seconds: float = 60, task: str = "tasks.report", **options) -> RedBeatSchedulerEntry:
    entry = RedBeatSchedulerEntry(name, task, every(seconds), app=app, **options)
    entry.save()
    return entry


def stored_definition(schedule_redis, name: str) -> dict:
    return json.loads(schedule_redis.hget(f"redbeat:{name}", "definition"))


# -- pages ---------------------------------------------------------------------------------

def test_the_pages_render_the_schedule_s_entries(app):
    add(app, "nightly-report", 3600)
    add(app, "paris", task="tasks.paris")
    web = client(app)
    overview = web.get("/")
    assert overview.status_code == 200 and 'id="count-active"' in overview.text
    listing = web.get("/schedule")
    assert listing.status_code == 200
    assert re.findall(r'class="entry-row[^"]*" data-name="([^"]+)"', listing.text) == ["paris", "nightly-report"]
    assert 'data-total="2"' in listing.text
    page = web.get("/entry", params={"name": "nightly-report"})
    assert page.status_code == 200 and "every 1h" in page.text and 'id="next-runs"' in page.text
    assert web.get("/entry", params={"name": "nothing-here"}).status_code == 404
    assert web.get("/chart.svg").headers["content-type"].startswith("image/svg+xml")


def test_an_entry_named_like_html_shows_as_text(app):
    add(app, HTML_NAME, task="<b>task</b>")
    web = client(app)
    for url in ("/schedule", f"/entry?name={urllib.request.quote(HTML_NAME)}", "/"):
        body = web.get(url).text
        assert "<script>alert" not in body and "<b>task" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in web.get("/schedule").text


def test_every_page_forbids_inline_scripts_and_framing(app):
    headers = client(app).get("/").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_the_redis_password_is_never_shown(redis_server):
    from conftest import make_app

    app = make_app(f"redis://:s3cret@127.0.0.1:{redis_server.port}/0")
    body = client(app).get("/").text
    assert "s3cret" not in body and "**" in body


def test_the_entry_page_shows_the_next_runs_in_its_zone_with_the_dst_change(app):
    RedBeatSchedulerEntry("monthly", "tasks.m", crontab(minute=0, hour=2, day_of_month=1, timezone="Europe/Paris"),
                          app=app).save()
    body = client(app).get("/entry", params={"name": "monthly"}).text
    assert "Europe/Paris" in body
    assert 'class="next-run dst-change"' in body  # ten monthly runs cross a change of offset


def test_the_overview_shows_the_active_beat(app, scheduler_for):
    scheduler = scheduler_for()
    scheduler.tick()
    data = client(app).get("/api/overview").json()
    assert data["beat"]["pid"] == os.getpid()
    assert data["health"]["word"] == "healthy"
    assert client(app).get("/").text.count(f'id="beat-pid" data-field="beat.pid">{os.getpid()}<') == 1


def test_the_overview_counts_entries_due_over_a_minute_as_late_and_those_whose_last_run_failed(
        app, schedule_redis):
    for name in ("long-due", "just-due", "due-now", "later"):
        add(app, name)
    now = float(schedule_redis.time()[0])
    schedule_redis.zadd("redbeat::schedule", {"redbeat:long-due": now - 120, "redbeat:just-due": now - 10,
                                              "redbeat:due-now": 0, "redbeat:later": now + 600})
    schedule_redis.zadd("redbeat::failing", {"redbeat:later": now - 5, "redbeat:removed-since": now - 1})
    counts = client(app).get("/api/overview").json()["counts"]
    assert (counts["due"], counts["late"], counts["failing"]) == (3, 1, 1)
    page = client(app).get("/").text
    assert 'data-field="counts.late">1<' in page and 'data-field="counts.failing">1<' in page


# -- paging, search and filters -------------------------------------------------------------

def many(schedule_redis, count: int) -> list[str]:
    """``count`` entries written as another program writes them, due one second apart."""
    names = [f"job-{i:05d}" for i in range(count)]
    pipe = schedule_redis.pipeline()
    for i, name in enumerate(names):
        enabled = "" if i % 10 else ', "enabled": false'
        pipe.hset(f"redbeat:{name}", "definition", f'{{"name": "{name}", "task": "tasks.t{i % 3}", '
                  f'"schedule": {{"__type__": "interval", "every": 3600}}{enabled}}}')
        pipe.zadd("redbeat::schedule", {f"redbeat:{name}": 4_000_000_000 + i})
    pipe.execute()
    return names


def test_paging_at_2000_entries_walks_the_schedule_in_next_run_order(app, schedule_redis):
    names = many(schedule_redis, 2000)
    web = client(app)
    seen = []
    for page in range(1, 21):
        answer = web.get("/api/entries", params={"page": page, "size": 100}).json()
        assert answer["total"] == 2000
        seen += [row["name"] for row in answer["entries"]]
    assert seen == names
    last = web.get("/api/entries", params={"page": 1, "size": 5, "sort": "-next"}).json()["entries"]
    assert [row["name"] for row in last] == names[::-1][:5]
    listing = web.get("/schedule", params={"page": 40, "size": 50}).text
    assert 'id="next-page"' not in listing and 'id="prev-page"' in listing


def test_search_and_state_filters_are_done_in_redis(app, schedule_redis):
    many(schedule_redis, 2000)
    web = client(app)
    found = web.get("/api/entries", params={"name": "JOB-0012", "size": 500}).json()
    assert sorted(row["name"] for row in found["entries"]) == [f"job-0012{i}" for i in range(10)]
    paused = web.get("/api/entries", params={"state": "paused", "size": 500}).json()
    assert paused["total"] == 200 and {row["state"] for row in paused["entries"]} == {"paused"}
    by_task = web.get("/api/entries", params={"task": "tasks.t2", "state": "active", "size": 10}).json()
    assert by_task["total"] == 600  # a third of 2000 is of t2 (667); its paused ones left out
    assert web.get("/api/entries", params={"state": "sleeping"}).status_code == 400
    # A page that scans is not polled: open tabs would keep Redis scanning.
    assert "data-poll" not in web.get("/schedule", params={"state": "paused"}).text
    assert 'data-poll="page"' in web.get("/schedule").text


# -- actions and their guards ---------------------------------------------------------------

def test_a_state_change_without_the_csrf_token_is_refused(app, schedule_redis):
    add(app, "guarded")
    web = client(app)
    assert web.post("/api/pause", json={"name": "guarded"}).status_code == 403
    assert web.post("/api/pause", json={"name": "guarded"}, headers={"X-CSRF-Token": "x" * 43}).status_code == 403
    assert web.post("/action", data={"name": "guarded", "action": "pause"}).status_code == 403
    assert stored_definition(schedule_redis, "guarded").get("enabled", True) is True


def test_pause_through_the_api_pauses_the_entry_in_redis(app, schedule_redis):
    add(app, "to-pause")
    web = client(app)
    answer = web.post("/api/pause", json={"name": "to-pause"}, headers={"X-CSRF-Token": token(web)})
    assert answer.status_code == 200 and answer.json()["said"] == "paused to-pause"
    assert stored_definition(schedule_redis, "to-pause")["enabled"] is False
    again = web.post("/api/resume", json={"name": "to-pause"}, headers={"X-CSRF-Token": token(web)})
    assert again.json()["said"] == "resumed to-pause"


def test_the_pause_form_pauses_and_says_so(app, schedule_redis):
    add(app, "by-form")
    web = client(app)
    page = web.post("/action", data={"name": "by-form", "action": "pause", "csrf_token": token(web)})
    assert page.status_code == 200 and 'id="said"' in page.text and "paused by-form" in page.text
    assert stored_definition(schedule_redis, "by-form")["enabled"] is False


def test_remove_asks_for_confirmation_first(app, schedule_redis):
    add(app, "doomed")
    web = client(app)
    form = {"name": "doomed", "action": "remove", "csrf_token": token(web)}
    asked = web.post("/action", data=form)
    assert 'id="confirm-yes"' in asked.text and schedule_redis.exists("redbeat:doomed")
    done = web.post("/action", data={**form, "confirmed": "yes"})
    assert "removed doomed" in done.text and not schedule_redis.exists("redbeat:doomed")


def cli_error(redis_url: str, tmp_path, definition: dict) -> str:
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(definition))
    done = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", redis_url, "add", "--file", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    return done.stderr.strip().removeprefix("Error: ")


def test_the_entry_page_offers_pause_or_resume_whichever_applies(app):
    add(app, "running")
    add(app, "stopped", enabled=False)
    web = client(app)
    running = web.get("/entry", params={"name": "running"}).text
    assert 'id="action-pause"' in running and 'id="action-resume"' not in running
    stopped = web.get("/entry", params={"name": "stopped"}).text
    assert 'id="action-resume"' in stopped and 'id="action-pause"' not in stopped
    assert all(f'id="action-{action}"' in page for page in (running, stopped) for action in ("run-now", "remove"))


def test_the_entry_page_and_api_show_the_overlap_policy_at_work_as_show_does(app, schedule_redis, redis_url):
    from click.testing import CliRunner

    from redbeat.cli import redbeat

    add(app, "guarded-run", overlap="skip", max_run_time=600)
    add(app, "plain-run")
    web = client(app)
    said = CliRunner().invoke(redbeat, ["--redis-url", redis_url, "show", "guarded-run"]).output
    line = re.search(r"overlap: (.*)", said).group(1)
    page = web.get("/entry", params={"name": "guarded-run"}).text
    assert f'<span class="overlap-line">{line}</span>' in html.unescape(page)
    shown = json.loads(CliRunner().invoke(redbeat, ["--redis-url", redis_url, "show", "guarded-run", "--json"]).output)
    assert web.get("/api/entry", params={"name": "guarded-run"}).json()["overlap"] == shown["overlap"]
    assert shown["overlap"]["policy"] == "skip"
    assert 'id="entry-overlap"' not in web.get("/entry", params={"name": "plain-run"}).text
    assert web.get("/api/entry", params={"name": "plain-run"}).json()["overlap"] is None


def test_create_with_an_unknown_field_is_refused_with_the_command_line_s_message(app, redis_url, tmp_path):
    definition = {"name": "odd", "task": "tasks.t", "schedule": {"__type__": "interval", "every": 60}, "queue": "q"}
    web = client(app)
    answer = web.post("/api/entries", json={"definition": definition}, headers={"X-CSRF-Token": token(web)})
    assert answer.status_code == 422
    assert answer.json()["error"] == cli_error(redis_url, tmp_path, definition)


def test_the_create_form_adds_an_entry_read_as_redbeat_add_reads_its_options(app, schedule_redis):
    web = client(app)
    form = {"name": "weekly", "task": "tasks.w", "kind": "cron", "schedule": "5 2 * * 1", "timezone": "Europe/Paris",
            "args": "[1, 2]", "options": "jitter=30", "csrf_token": token(web)}
    page = web.post("/new", data=form)
    assert page.status_code == 200 and "added weekly: at 02:05 Mon in Europe/Paris" in page.text
    stored = stored_definition(schedule_redis, "weekly")
    assert stored["args"] == [1, 2] and stored["jitter"] == 30
    refused = web.post("/new", data={**form, "name": "bad", "args": "[1,"})
    assert refused.status_code == 400 and "args: --args must be JSON" in refused.text


def test_edit_refuses_a_field_no_entry_has(app):
    add(app, "edited")
    web = client(app)
    answer = web.post("/api/edit", json={"name": "edited", "field": "queue", "value": "q"},
                      headers={"X-CSRF-Token": token(web)})
    assert answer.status_code == 422 and "a task option: it belongs in 'options'" in answer.json()["error"]
    done = web.post("/api/edit", json={"name": "edited", "field": "description", "text": "nightly"},
                    headers={"X-CSRF-Token": token(web)})
    assert done.json()["said"] == "edited: description = nightly"


def test_bulk_pause_acts_on_what_the_search_picks_once_confirmed(app, schedule_redis):
    for name in ("etl-a", "etl-b", "other"):
        add(app, name)
    web = client(app)
    headers = {"X-CSRF-Token": token(web)}
    preview = web.post("/api/bulk", json={"action": "pause", "name": "etl"}, headers=headers).json()
    assert sorted(preview["would_change"]) == ["etl-a", "etl-b"]
    assert stored_definition(schedule_redis, "etl-a").get("enabled", True) is True
    done = web.post("/api/bulk", json={"action": "pause", "names": preview["would_change"], "confirmed": True},
                    headers=headers).json()
    assert done["ok"] and sorted(result["name"] for result in done["results"]) == ["etl-a", "etl-b"]
    assert [stored_definition(schedule_redis, n).get("enabled", True) for n in ("etl-a", "etl-b", "other")] == \
        [False, False, True]


def test_read_only_has_no_action_routes_nor_buttons(app, schedule_redis):
    add(app, "watched")
    web = client(app, read_only=True)
    headers = {"X-CSRF-Token": token(web)}
    assert web.post("/api/pause", json={"name": "watched"}, headers=headers).status_code in (404, 405)
    assert web.post("/action", data={"name": "watched", "action": "pause"}).status_code in (404, 405)
    assert web.get("/new").status_code == 404
    page = web.get("/entry", params={"name": "watched"}).text
    assert 'id="action-pause"' not in page and 'data-read-only="true"' in page


def test_authentication_is_required_when_set(app):
    web = client(app, auth="ops:s3cret")
    assert web.get("/").status_code == 401
    assert web.get("/api/overview", auth=("ops", "wrong")).status_code == 401
    assert web.get("/api/overview", auth=("ops", "s3cret")).status_code == 200


def test_an_unknown_host_header_is_refused_on_loopback(app):
    web = client(app, allowed_hosts=("127.0.0.1", "localhost"))
    assert web.get("/").status_code == 200
    assert web.get("/", headers={"Host": "rebound.example:9641"}).status_code == 400


def test_a_reading_is_shared_for_its_time_to_live():
    now = [0.0]
    reads = []
    reading = Reading(lambda: reads.append(1) or len(reads), ttl=2.0, clock=lambda: now[0])
    assert reading.get() == 1 and reading.get() == 1
    now[0] = 2.5
    assert reading.get() == 2


# -- the command -----------------------------------------------------------------------------

def test_the_web_command_refuses_other_addresses_without_credentials(redis_url):
    env = {k: v for k, v in os.environ.items() if k != "REDBEAT_WEB_AUTH"}
    done = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", redis_url, "web", "--host", "0.0.0.0",
                           "--port", "0"], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 5
    assert done.stderr.count("\n") == 1 and "without authentication" in done.stderr


class Served:
    """``redbeat web --port 0`` as a real process, its address read from the line it prints; stopped by PID."""

    def __init__(self, command: list[str], log, env: dict | None = None, cwd: str | None = None) -> None:
        self.log = log
        with open(log, "w") as out:
            self.process = subprocess.Popen([*command, "web", "--port", "0"], stdout=out, stderr=subprocess.STDOUT,
                                            text=True, env=env, cwd=cwd)
        line = wait_for(lambda: self.process.poll() is None and re.search(r"http://127\.0\.0\.1:\d+/",
                                                                          log.read_text()),
                        timeout=30, message="the serving line")
        self.url = line.group(0)

    def post(self, path: str, body: dict) -> tuple[int, dict]:
        """A POST with the CSRF cookie and token, as a script sends it."""
        with urllib.request.urlopen(self.url + "api/csrf", timeout=10) as reply:
            cookie = reply.headers["set-cookie"].split(";")[0]
            sent = json.loads(reply.read())["token"]
        request = urllib.request.Request(self.url + path, data=json.dumps(body).encode(), method="POST",
                                         headers={"Cookie": cookie, "X-CSRF-Token": sent})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=20)


def test_the_web_command_serves_the_dashboard_over_http(app, redis_url, tmp_path):
    add(app, HTML_NAME)
    served = Served([sys.executable, "-m", "redbeat.cli", "--redis-url", redis_url], tmp_path / "web.log")
    try:
        with urllib.request.urlopen(served.url + "schedule", timeout=10) as reply:
            body = reply.read().decode()
        assert reply.status == 200 and "&lt;script&gt;alert(1)&lt;/script&gt;" in body
        request = urllib.request.Request(served.url + "api/pause", data=b'{"name": "x"}', method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403
        assert served.post("api/pause", {"name": HTML_NAME}) == (200, {"ok": True, "said": f"paused {HTML_NAME}",
                                                                        "warning": None})
    finally:
        code = served.stop()
    assert code == 0 and "Traceback" not in served.log.read_text()


def test_inside_a_celery_project_the_web_command_checks_task_names(redis_server, redis_url, project_env, tmp_path):
    env = dict(project_env, E2E_REDBEAT_URL=redis_url, E2E_BROKER_URL=redis_server.url(1),
               E2E_RECORD_URL=redis_server.url(2))
    served = Served([sys.executable, "-m", "celery", "-A", "e2e_app", "redbeat"], tmp_path / "web.log", env=env,
                    cwd=str(tmp_path))
    try:
        typed = {"name": "typo", "task": "e2e_app.recrod", "kind": "every", "schedule": "60"}
        status, answer = served.post("api/entries", typed)
        assert status == 422 and "unknown task 'e2e_app.recrod'" in answer["error"]
        assert "e2e_app.record" in answer["error"]  # did you mean
        status, answer = served.post("api/entries", {**typed, "task": "e2e_app.record", "args": '["web"]'})
        assert status == 200, answer
    finally:
        assert served.stop() == 0


def test_a_name_that_is_not_utf8_shows_escaped_and_breaks_nothing(app, schedule_redis):
    add(app, "plain")
    schedule_redis.hset(b"redbeat:bad\xff", "definition", json.dumps({
        "name": "bad", "task": "tasks.t", "schedule": {"__type__": "interval", "every": 60}}))
    schedule_redis.zadd("redbeat::schedule", {b"redbeat:bad\xff": 0})
    web = client(app)
    page = web.get("/schedule")
    assert page.status_code == 200 and "bad\\xff" in page.text and "%FF" in page.text
    assert web.get("/api/entries").status_code == 200
    assert web.get("/").status_code == 200


def test_the_entry_page_shows_its_runs_with_task_ids_and_a_parked_reason_in_words(app, schedule_redis, scheduler_for):
    from conftest import raw_entry, tick_until

    raw_entry(schedule_redis, "ran", every=3600, score=0)
    raw_entry(schedule_redis, "broken", score=0, schedule={"__type__": "nonsense"})
    scheduler = scheduler_for()
    tick_until(scheduler, lambda: schedule_redis.llen("redbeat::history:ran") and
               schedule_redis.hexists("redbeat:broken", "parked"), message="a run recorded and an entry parked")
    [record] = [json.loads(raw) for raw in schedule_redis.lrange("redbeat::history:ran", 0, -1)]
    web = client(app)
    page = web.get("/entry", params={"name": "ran"}).text
    assert f'data-task-id="{record["task_id"]}" data-outcome="published"' in page
    assert re.search(r'<td class="lateness">\d+\.\d{3} s</td>', page)
    parked = web.get("/entry", params={"name": "broken"}).text
    assert 'id="parked-reason"' in parked and "Beat set this entry aside and will not run it" in parked
    assert web.get("/api/entry", params={"name": "ran"}).json()["history"][0]["task_id"] == record["task_id"]


def test_mounted_in_a_site_its_links_follow_the_mount_path(app):
    from starlette.applications import Starlette
    from starlette.routing import Mount

    add(app, "mounted")
    site = TestClient(Starlette(routes=[Mount("/redbeat", create_app(app))]), base_url=LOCAL)
    page = site.get("/redbeat/schedule")
    assert page.status_code == 200
    assert 'href="/redbeat/entry?name=mounted"' in page.text and 'src="/redbeat/static/dashboard.js"' in page.text
    assert site.get("/redbeat/static/dashboard.js").status_code == 200
    assert site.get("/redbeat/api/entries").json()["total"] == 1


def test_the_edit_form_changes_a_field_and_refuses_with_the_command_line_s_words(app, schedule_redis):
    add(app, "edited-by-form")
    web = client(app)
    sent = {"name": "edited-by-form", "csrf_token": token(web)}
    done = web.post("/edit", data={**sent, "field": "args", "value": "[3]"})
    assert done.status_code == 200 and "edited-by-form: args = [3]" in done.text
    assert stored_definition(schedule_redis, "edited-by-form")["args"] == [3]
    refused = web.post("/edit", data={**sent, "field": "jitter", "value": "soon"})
    assert refused.status_code == 400 and 'id="refused"' in refused.text and "takes a JSON value" in refused.text


def test_the_dashboard_s_connections_send_at_once_without_waiting_for_acks():
    """TCP_NODELAY on each connection of ``redbeat web``'s socket: without it, every response on a
    kept-alive connection waited ~40 ms between its headers and its body."""
    import asyncio
    import socket

    from redbeat.web.serving import listening

    async def nodelay_of_a_connection() -> int:
        sock = listening("127.0.0.1", 0)
        seen: list[int] = []

        async def accepted(reader, writer) -> None:
            seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=sock)
        async with server:
            reader, writer = await asyncio.open_connection(*sock.getsockname())
            await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
        return seen[0]

    assert asyncio.run(nodelay_of_a_connection()) == 1
