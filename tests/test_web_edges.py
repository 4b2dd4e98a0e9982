"""Edge cases of the dashboard: odd names, odd values from other programs, forged requests.
Each test proves one bug a review found (and that it stays fixed), against the session's
real redis-server, through starlette's TestClient."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from html import unescape
from urllib.parse import quote

import pytest
from celery.schedules import schedule as every  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from redbeat import RedBeatSchedulerEntry  # noqa: E402
from redbeat.web import create_app  # noqa: E402

LOCAL = "http://127.0.0.1"
SCHEDULE = "redbeat::schedule"


def client(app, **options) -> TestClient:
    return TestClient(create_app(app, **options), base_url=LOCAL)


def token(web: TestClient) -> str:
    return web.get("/api/csrf").json()["token"]


def add(app, name: str, seconds: float = 60, **options) -> RedBeatSchedulerEntry:
    entry = RedBeatSchedulerEntry(name, "tasks.report", every(seconds), app=app, **options)
    entry.save()
    return entry


def enabled(schedule_redis, name: str) -> bool:
    return json.loads(schedule_redis.hget(f"redbeat:{name}", "definition")).get("enabled", True)


def hidden_name(page: str) -> str:
    """The entry name the page's pause form posts."""
    form = re.search(r'data-action="pause".*?name="name" value="([^"]*)"', page, re.S)
    assert form, page
    return unescape(form.group(1))


# -- names that reach a form or a link ----------------------------------------------------------

def test_pausing_from_the_page_pauses_an_entry_whose_name_holds_a_backslash(app, schedule_redis):
    name = "reports\\daily"
    add(app, name)
    web = client(app)
    page = web.get("/entry", params={"name": name}).text
    answer = web.post("/action", data={"csrf_token": token(web), "name": hidden_name(page), "action": "pause"})
    assert answer.status_code == 200, answer.text
    assert enabled(schedule_redis, name) is False


def test_removing_from_the_page_of_a_name_with_a_backslash_leaves_its_look_alike_alone(app, schedule_redis):
    add(app, "reports\\daily")
    add(app, "reports\\\\daily")  # what printable shows of the first one's name
    web = client(app)
    page = web.get("/entry", params={"name": "reports\\daily"}).text
    confirm = web.post("/action", data={"csrf_token": token(web), "name": hidden_name(page), "action": "remove"})
    fields = dict((key, unescape(value)) for key, value in
                  re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm.text))
    assert web.post("/action", data=fields).status_code == 200
    assert not schedule_redis.exists("redbeat:reports\\daily")
    assert schedule_redis.exists("redbeat:reports\\\\daily")


@pytest.mark.parametrize("name", ["tab\there", "bidi\u202eexe", "line\nbreak", "cr\rhere", "100%41", "a+b"])
def test_the_page_s_forms_act_on_the_entry_whatever_its_name(app, schedule_redis, name):
    add(app, name)
    web = client(app)
    page = web.get("/entry", params={"name": name}).text
    answer = web.post("/action", data={"csrf_token": token(web), "name": hidden_name(page), "action": "pause"})
    assert answer.status_code == 200 and enabled(schedule_redis, name) is False
    edit = web.get("/edit", params={"name": name}).text
    posted = unescape(re.search(r'<input type="hidden" name="name" value="([^"]*)">', edit).group(1))
    answer = web.post("/edit", data={"csrf_token": token(web), "name": posted, "field": "description",
                                     "value": "changed"})
    assert answer.status_code == 200, answer.text
    assert json.loads(schedule_redis.hget(f"redbeat:{name}", "definition"))["description"] == "changed"


def test_pausing_from_the_page_of_a_name_that_is_not_utf8_pauses_it(app, schedule_redis):
    schedule_redis.hset(b"redbeat:bad\xff", "definition", json.dumps({
        "name": "bad", "task": "tasks.t", "schedule": {"__type__": "interval", "every": 60}}))
    schedule_redis.zadd(SCHEDULE, {b"redbeat:bad\xff": 0})
    web = client(app)
    page = web.get("/entry?name=bad%FF")
    assert page.status_code == 200
    answer = web.post("/action", data={"csrf_token": token(web), "name": hidden_name(page.text), "action": "pause"})
    assert answer.status_code == 200, answer.text
    assert json.loads(schedule_redis.hget(b"redbeat:bad\xff", "definition"))["enabled"] is False


@pytest.mark.parametrize("name", ["a/b", "what?", "tag#1", "100%", "..", "../x", "a&b=c", "sp ace"])
def test_the_schedule_s_link_to_an_entry_opens_it_whatever_its_name(app, name):
    add(app, name)
    web = client(app)
    listing = web.get("/schedule").text
    link = unescape(re.search(r'<td class="name"><a href="([^"]+)"', listing).group(1))
    assert web.get(link).status_code == 200
    assert quote(name, safe="") in link


def test_the_schedule_s_link_to_an_entry_whose_name_is_not_utf8_opens_it(app, schedule_redis):
    schedule_redis.hset(b"redbeat:bad\xff", "definition", json.dumps({
        "name": "bad", "task": "tasks.t", "schedule": {"__type__": "interval", "every": 60}}))
    schedule_redis.zadd(SCHEDULE, {b"redbeat:bad\xff": 0})
    web = client(app)
    link = unescape(re.search(r'<td class="name"><a href="([^"]+)"', web.get("/schedule").text).group(1))
    assert link.endswith("bad%FF")
    assert web.get(link).status_code == 200


# -- values from Redis on the entry page ----------------------------------------------------------

def test_the_entry_page_shows_a_definition_whose_text_is_not_utf8(app, schedule_redis):
    definition = json.dumps({"name": "odd", "task": "tasks.t", "description": "caf@",
                             "schedule": {"__type__": "interval", "every": 60}}).encode().replace(b"caf@", b"caf\xe9")
    schedule_redis.hset("redbeat:odd", "definition", definition)
    schedule_redis.zadd(SCHEDULE, {"redbeat:odd": 0})
    page = client(app).get("/entry", params={"name": "odd"})
    assert page.status_code == 200
    assert "caf\\xe9" in page.text or "caf\\udce9" in page.text


def test_the_definition_shown_escapes_bidi_controls_as_every_other_text(app):
    add(app, "bidi", description="invoice\u202etxt.exe")
    page = client(app).get("/entry", params={"name": "bidi"}).text
    assert "\u202e" not in page


# -- odd values in Redis --------------------------------------------------------------------------

def test_a_history_record_with_an_infinite_lateness_breaks_no_page(app, schedule_redis):
    add(app, "late")
    schedule_redis.lpush("redbeat::history:late", '{"scheduled": 1, "dispatched": 2, "lateness": Infinity, '
                                                 '"outcome": "published", "task_id": "t"}')
    web = client(app)
    assert web.get("/schedule").status_code == 200
    assert web.get("/api/entries").status_code == 200
    assert web.get("/api/entry", params={"name": "late"}).status_code == 200


def test_a_member_scored_infinity_breaks_no_page(app, schedule_redis):
    add(app, "forever")
    schedule_redis.zadd(SCHEDULE, {"redbeat:forever": float("inf")})
    web = client(app)
    assert web.get("/schedule").status_code == 200
    assert web.get("/api/entries").status_code == 200
    assert web.get("/entry", params={"name": "forever"}).status_code == 200


@pytest.mark.parametrize("dispatched", ["1e20", "\"inf\"", "\"nan\"", "-1e20"])
def test_a_history_record_from_another_program_does_not_break_the_chart(app, schedule_redis, dispatched):
    add(app, "charted")
    record = '{"scheduled": 1, "dispatched": DISPATCHED, "outcome": "published"}'.replace("DISPATCHED", dispatched)
    schedule_redis.lpush("redbeat::history:charted", record)
    chart = client(app).get("/chart.svg")
    assert chart.status_code == 200 and chart.text.startswith("<svg")


def test_an_entry_key_of_another_type_is_shown_not_a_server_error(app, schedule_redis):
    schedule_redis.set("redbeat:stringy", "not a hash")
    schedule_redis.zadd(SCHEDULE, {"redbeat:stringy": 0})
    web = client(app)
    assert web.get("/schedule").status_code == 200
    assert web.get("/entry", params={"name": "stringy"}).status_code in (200, 404)
    assert web.get("/api/entry", params={"name": "stringy"}).status_code in (200, 404)
    answer = web.post("/api/pause", json={"name": "stringy"}, headers={"X-CSRF-Token": token(web)})
    assert answer.status_code == 422


# -- odd input from the client ----------------------------------------------------------------------

@pytest.mark.parametrize("query", ["page=0", "page=-1", "page=x", "page=99999999999999999999", "size=0",
                                   "size=100000", "size=-5", "sort=bogus", "state=bogus", "page=1e3",
                                   "page=" + "9" * 5000, "name=%00", "name=[", "task=%25", "name=\\"])
def test_odd_schedule_queries_answer_without_a_server_error(app, query):
    add(app, "plain")
    web = client(app)
    assert web.get(f"/schedule?{query}").status_code in (200, 400)
    assert web.get(f"/api/entries?{query}").status_code in (200, 400)


@pytest.mark.parametrize("body", [{"name": "plain", "field": "description", "text": 5},
                                  {"name": "plain", "field": "description", "text": None},
                                  {"name": "plain", "field": 5, "value": 1}])
def test_an_edit_with_a_value_of_the_wrong_json_type_is_refused_not_a_server_error(app, body):
    add(app, "plain")
    web = client(app)
    answer = web.post("/api/edit", json=body, headers={"X-CSRF-Token": token(web)})
    assert answer.status_code in (400, 422), answer.text


@pytest.mark.parametrize("name", [5, ["x"], {"a": 1}, True])
def test_a_definition_whose_name_is_not_text_is_refused_not_a_server_error(app, name):
    web = client(app)
    definition = {"name": name, "task": "tasks.t", "schedule": {"__type__": "interval", "every": 60}}
    answer = web.post("/api/entries", json={"definition": definition}, headers={"X-CSRF-Token": token(web)})
    assert answer.status_code in (400, 422), answer.text


@pytest.mark.parametrize("name", ["", ":schedule", ":statics", "x" * 100_000])
def test_an_action_on_a_name_that_is_no_entry_is_refused(app, name):
    web = client(app)
    answer = web.post("/api/pause", json={"name": name}, headers={"X-CSRF-Token": token(web)})
    assert answer.status_code in (400, 404, 413, 422), answer.text


# -- CSRF -----------------------------------------------------------------------------------------

def test_a_post_from_another_port_of_the_same_host_is_refused_even_with_a_tossed_cookie(app, schedule_redis):
    # Cookies do not keep ports apart: a page served on 127.0.0.1:8000 can set redbeat_csrf for
    # 127.0.0.1, and its form POST to the dashboard is same-site, so SameSite=Strict sends it.
    add(app, "victim")
    web = client(app)
    tossed = "A" * 43
    web.cookies.set("redbeat_csrf", tossed)
    answer = web.post("/action", data={"csrf_token": tossed, "name": "victim", "action": "pause"},
                      headers={"Origin": "http://127.0.0.1:8000", "Sec-Fetch-Site": "same-site"})
    assert answer.status_code == 403
    assert enabled(schedule_redis, "victim") is True


def test_a_post_from_the_dashboard_s_own_pages_passes_the_origin_check(app, schedule_redis):
    add(app, "mine")
    web = client(app)
    answer = web.post("/action", data={"csrf_token": token(web), "name": "mine", "action": "pause"},
                      headers={"Origin": LOCAL, "Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 200
    assert enabled(schedule_redis, "mine") is False


def test_the_csrf_cookie_is_httponly_and_samesite_strict(app):
    cookie = client(app).get("/").headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


# -- bulk -----------------------------------------------------------------------------------------

def test_bulk_pause_confirmed_pauses_only_the_entries_it_listed(app, schedule_redis):
    add(app, "due-a")
    add(app, "later-b")
    schedule_redis.zadd(SCHEDULE, {"redbeat:due-a": 1, "redbeat:later-b": 4_000_000_000})
    web = client(app)
    headers = {"X-CSRF-Token": token(web)}
    listed = web.post("/api/bulk", json={"action": "pause", "state": "due"}, headers=headers).json()
    assert listed["would_change"] == ["due-a"]
    schedule_redis.zadd(SCHEDULE, {"redbeat:later-b": 2})  # its time comes while the operator reads the list
    again = web.post("/api/bulk", json={"action": "pause", "state": "due", "confirmed": True}, headers=headers)
    assert again.status_code == 400  # a confirmation names what it confirms: no search made again
    done = web.post("/api/bulk", json={"action": "pause", "state": "due", "confirmed": True,
                                       "names": listed["would_change"]}, headers=headers)
    assert done.status_code == 200 and [r["name"] for r in done.json()["results"]] == ["due-a"]
    assert enabled(schedule_redis, "due-a") is False
    assert enabled(schedule_redis, "later-b") is True


def hidden_fields(page: str) -> dict[str, str]:
    return dict((key, unescape(value)) for key, value in
                re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page))


def test_the_bulk_confirmation_page_acts_only_on_the_entries_it_listed(app, schedule_redis):
    add(app, "due-a")
    add(app, "later-b")
    schedule_redis.hset(b"redbeat:due\xff", "definition", json.dumps({
        "name": "due", "task": "tasks.t", "schedule": {"__type__": "interval", "every": 60}}))
    schedule_redis.zadd(SCHEDULE, {"redbeat:due-a": 1, "redbeat:later-b": 4_000_000_000, b"redbeat:due\xff": 1})
    web = client(app)
    confirm = web.post("/bulk", data={"csrf_token": token(web), "state": "due", "action": "pause"}).text
    assert re.findall(r'<ul id="confirm-names">(.*?)</ul>', confirm, re.S) == ["<li>due-a</li><li>due\\xff</li>"]
    schedule_redis.zadd(SCHEDULE, {"redbeat:later-b": 2})
    done = web.post("/bulk", data=hidden_fields(confirm))
    assert done.status_code == 200, done.text
    assert enabled(schedule_redis, "due-a") is False and enabled(schedule_redis, "later-b") is True
    assert json.loads(schedule_redis.hget(b"redbeat:due\xff", "definition"))["enabled"] is False


def test_a_bulk_selection_bigger_than_one_confirmation_lists_is_refused(app, schedule_redis, monkeypatch):
    from redbeat.web import actions

    monkeypatch.setattr(actions, "BULK_LIMIT", 2)
    for name in ("etl-a", "etl-b", "etl-c"):
        add(app, name)
    web = client(app)
    headers = {"X-CSRF-Token": token(web)}
    answer = web.post("/api/bulk", json={"action": "pause", "name": "etl"}, headers=headers)
    assert answer.status_code == 422 and "3 entries match" in answer.json()["error"]
    assert "narrow the search" in answer.json()["error"]
    answer = web.post("/api/bulk", json={"action": "pause", "names": ["etl-a", "etl-b", "etl-c"], "confirmed": True},
                      headers=headers)
    assert answer.status_code == 422
    page = web.post("/bulk", data={"csrf_token": token(web), "name": "etl", "action": "pause"})
    assert page.status_code == 422 and "narrow the search" in page.text
    assert [enabled(schedule_redis, name) for name in ("etl-a", "etl-b", "etl-c")] == [True, True, True]


# -- the page's script ----------------------------------------------------------------------------

def test_the_overview_poll_can_link_every_most_overdue_name(app, schedule_redis):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    schedule_redis.hset(b"redbeat:bad\xff", "definition", json.dumps({
        "name": "bad", "task": "tasks.t", "schedule": {"__type__": "interval", "every": 60}}))
    schedule_redis.zadd(SCHEDULE, {b"redbeat:bad\xff": 1})
    web = client(app)
    answer = web.get("/api/overview").text
    # The page's script encodes no name itself (encodeURIComponent throws on a lone surrogate):
    # it uses the link the server made. What it does with each most-overdue entry, run by node.
    script_path = os.path.join(os.path.dirname(__file__), "..", "redbeat", "web", "static", "dashboard.js")
    with open(script_path, encoding="utf-8") as script_file:
        assert "encodeURIComponent(" not in script_file.read()
    script = ("const data = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
              "data.most_overdue.forEach(e => { const a = new URL(e.link, 'http://127.0.0.1');"
              " console.log(a.pathname + a.search + ' ' + e.shown); });")
    done = subprocess.run([node, "-e", script], input=answer, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["/entry?name=bad%FF bad\\xff"]
    assert web.get("/entry?name=bad%FF").status_code == 200


def test_the_api_s_rows_carry_the_link_of_each_entry_s_page(app, schedule_redis):
    schedule_redis.hset(b"redbeat:bad\xff", "definition", json.dumps({
        "name": "bad", "task": "tasks.t", "schedule": {"__type__": "interval", "every": 60}}))
    schedule_redis.zadd(SCHEDULE, {b"redbeat:bad\xff": 1})
    add(app, "a b/c")
    web = client(app)
    rows = web.get("/api/entries", params={"sort": "name"}).json()["entries"]
    assert [(row["link"], row["shown"]) for row in rows] == [("/entry?name=a%20b%2Fc", "a b/c"),
                                                              ("/entry?name=bad%FF", "bad\\xff")]
    assert all(web.get(row["link"]).status_code == 200 for row in rows)


# -- task names where the app knows them ------------------------------------------------------------

def test_with_known_tasks_an_edit_of_the_task_is_checked_as_the_command_line_checks_it(app, schedule_redis):
    add(app, "checked")
    web = client(app, require_known_tasks=True)
    answer = web.post("/api/edit", json={"name": "checked", "field": "task", "text": "tasks.nope"},
                      headers={"X-CSRF-Token": token(web)})
    assert answer.status_code == 422 and "unknown task 'tasks.nope'" in answer.json()["error"]


# -- the command ----------------------------------------------------------------------------------

def web_command(redis_url: str, *args: str, auth: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REDBEAT_WEB_AUTH"}
    if auth is not None:
        env["REDBEAT_WEB_AUTH"] = auth
    return subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", redis_url, "web", *args],
                          capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("host", ["::", "0.0.0.0", "192.0.2.1", "example.invalid", "", "::ffff:0.0.0.0"])
def test_the_web_command_refuses_any_address_but_loopback_without_credentials(redis_url, host):
    done = web_command(redis_url, "--host", host, "--port", "0")
    assert done.returncode == 5 and done.stderr.count("\n") == 1, done.stderr
    assert "without authentication" in done.stderr


def test_the_web_command_says_in_one_line_that_its_port_is_taken(redis_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        done = web_command(redis_url, "--port", str(taken.getsockname()[1]))
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot listen on 127.0.0.1 port" in done.stderr and "Traceback" not in done.stderr


def test_the_web_command_says_in_one_line_that_a_host_does_not_resolve(redis_url):
    done = web_command(redis_url, "--host", "example.invalid", "--port", "0", auth="user:secret")
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "secret" not in done.stderr + done.stdout


# -- guards ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("host", ["evil.example", "evil.example:9641", "127.0.0.1.evil.example", "localhost.",
                                  "[::2]:80", "", "127.0.0.1:80:80"])
def test_a_host_header_naming_another_host_is_refused_on_loopback(app, host):
    web = client(app, allowed_hosts=("127.0.0.1", "localhost", "::1"))
    assert web.get("/", headers={"Host": host}).status_code == 400


@pytest.mark.parametrize("host", ["127.0.0.1:9641", "LOCALHOST", "[::1]:9641", "localhost:1"])
def test_a_host_header_naming_loopback_is_served(app, host):
    web = client(app, allowed_hosts=("127.0.0.1", "localhost", "::1"))
    assert web.get("/", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("header", ["", "Basic", "Basic !!!", "Bearer dXNlcjpzZWNyZXQ=", "Basic dXNlcjpzZWNyZXQ",
                                    "Basic dXNlcjpzZWNyZXQK", "Basic dXNlcjpzZWNyZXQ=dXNlcjpzZWNyZXQ="])
def test_basic_authentication_refuses_anything_but_the_exact_credentials(app, header):
    web = client(app, auth="user:secret")
    assert web.get("/api/overview", headers={"Authorization": header}).status_code == 401
    assert web.get("/api/overview", headers={"Authorization": "basic dXNlcjpzZWNyZXQ="}).status_code == 200


def test_a_read_only_dashboard_changes_nothing_through_any_route(app, schedule_redis):
    add(app, "kept")
    web = client(app, read_only=True)
    headers = {"X-CSRF-Token": token(web)}
    for path in ("/action", "/bulk", "/new", "/edit", "/api/pause", "/api/remove", "/api/run-now", "/api/entries",
                 "/api/edit", "/api/bulk", "/schedule", "/entry", "/"):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            answer = web.request(method, path, headers=headers,
                                 json={"name": "kept", "action": "remove", "confirmed": True})
            assert answer.status_code in (404, 405), (method, path)
    assert schedule_redis.exists("redbeat:kept") and enabled(schedule_redis, "kept") is True


def test_the_redis_password_is_in_no_page_nor_answer(redis_server, redis_url):
    from conftest import make_app

    # The session's server has no password set: its default user (nopass) accepts any.
    app = make_app(f"redis://:hunter2-secret@127.0.0.1:{redis_server.port}/0")
    add(app, "guarded")
    web = client(app)
    for path in ("/", "/schedule", "/entry?name=guarded", "/api/overview", "/api/entries",
                 "/api/entry?name=guarded", "/chart.svg", "/new", "/edit?name=guarded", "/entry?name=none",
                 "/schedule?page=x", "/api/entries?sort=x"):
        answer = web.get(path)
        assert answer.status_code in (200, 400, 404) and "hunter2" not in answer.text, path


# -- paging ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sort", ["name", "-name"])
def test_the_due_filter_sorted_by_name_lists_only_the_due_entries(app, schedule_redis, sort):
    add(app, "due-a")
    add(app, "later-b")
    schedule_redis.zadd(SCHEDULE, {"redbeat:due-a": 1, "redbeat:later-b": 4_000_000_000})
    answer = client(app).get("/api/entries", params={"state": "due", "sort": sort}).json()
    assert [row["name"] for row in answer["entries"]] == ["due-a"] and answer["total"] == 1




def test_bulk_pause_of_a_search_holding_a_backslash_pauses_what_the_search_found(app, schedule_redis):
    add(app, "share\\reports")
    add(app, "share\\\\reports")  # what printable shows of the search text
    web = client(app)
    listing = web.get("/schedule", params={"name": "e\\r"}).text
    fields = dict((key, unescape(value)) for key, value in
                  re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">',
                             listing[listing.index('id="bulk"'):]))
    confirm = web.post("/bulk", data={**fields, "action": "pause"}).text
    assert "share\\\\\\\\reports" not in confirm  # the look-alike is not listed
    fields = dict((key, unescape(value)) for key, value in
                  re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', confirm))
    assert web.post("/bulk", data=fields).status_code == 200
    assert enabled(schedule_redis, "share\\reports") is False
    assert enabled(schedule_redis, "share\\\\reports") is True


@pytest.mark.parametrize("name", [":schedule", ":statics", ":lock", ":history:x", "", ":"])
def test_the_pages_of_a_name_that_is_one_of_redbeat_s_own_keys_answer_without_a_server_error(app, name):
    add(app, "x")
    client(app).get("/")  # beat's own keys exist
    web = client(app)
    for path in ("/entry", "/api/entry", "/edit"):
        assert web.get(path, params={"name": name}).status_code in (200, 404), path


def test_a_refused_create_form_keeps_what_was_typed_exactly(app):
    web = client(app)
    typed = {"name": "copy", "task": "tasks.copy", "kind": "every", "schedule": "soon",  # refused: no number
             "kwargs": '{"path": "C:\\\\tmp"}', "description": "tab\\there"}
    page = web.post("/new", data={"csrf_token": token(web), **typed})
    assert page.status_code in (400, 422)
    inputs = re.findall(r'<input name="([a-z]+)" id="new-[a-z]+" value="([^"]*)"', page.text)
    shown = {key: unescape(value) for key, value in inputs}
    assert shown["kwargs"] == typed["kwargs"] and shown["description"] == typed["description"]


def test_a_refused_edit_form_keeps_what_was_typed_exactly(app):
    add(app, "copy")
    web = client(app)
    typed = '{"path": "C:\\\\tmp", "bad": '
    page = web.post("/edit", data={"csrf_token": token(web), "name": "copy", "field": "kwargs", "value": typed})
    assert page.status_code in (400, 422)
    shown = re.search(r'<textarea name="value" id="edit-value"[^>]*>(.*?)</textarea>', page.text, re.S).group(1)
    shown = unescape(shown)
    assert shown == typed
