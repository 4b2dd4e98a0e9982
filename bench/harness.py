"""One benchmark measurement, run inside a virtualenv holding the scheduler to
measure: this checkout's RedBeat, celery-redbeat 2.4.2, or Celery's own
PersistentScheduler. Prints one JSON object. ``bench/run.py`` drives it.

Only APIs both RedBeat versions share are used (entries are written as raw
hashes in the common data format; ticks are driven by Celery's own beat
service or by calling ``tick``), so the same code measures both.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from celery import Celery

INTERVAL_ENTRY = '{{"name": "{name}", "task": "bench.noop", "args": [], "kwargs": {{}}, "options": {{}}, ' \
                 '"schedule": {{"__type__": "interval", "every": {every}, "relative": false}}, "enabled": true}}'


def meta_json(last_run_at: float) -> str:
    moment = time.gmtime(last_run_at)
    micro = int(round((last_run_at % 1) * 1e6)) % 1000000
    return json.dumps({"last_run_at": {"__type__": "datetime", "year": moment.tm_year, "month": moment.tm_mon,
                                       "day": moment.tm_mday, "hour": moment.tm_hour, "minute": moment.tm_min,
                                       "second": moment.tm_sec, "microsecond": micro, "timezone": "UTC"},
                       "total_run_count": 0})


def make_app(args: argparse.Namespace, **settings) -> Celery:
    app = Celery("bench", set_as_current=True)
    app.conf.update({"broker_url": args.broker_url, "redbeat_redis_url": args.schedule_url,
                     "redbeat_lock_key": None, "timezone": "UTC", "beat_max_loop_interval": 1, **settings})
    return app


def scheduler_class(args: argparse.Namespace):
    if args.scheduler == "persistent":
        from celery.beat import PersistentScheduler
        return PersistentScheduler
    from redbeat import RedBeatScheduler
    return RedBeatScheduler


def make_scheduler(args: argparse.Namespace, app: Celery, schedule: dict | None = None):
    cls = scheduler_class(args)
    if args.scheduler == "persistent":
        app.conf.beat_schedule = schedule or {}
        return cls(app=app, schedule_filename=os.path.join(tempfile.mkdtemp(), "beat-schedule"))
    return cls(app=app)


def populate(args: argparse.Namespace, count: int, every: float, first_slot, name="e") -> dict:
    """Write ``count`` interval entries; ``first_slot(i)`` is entry i's first due time (None: due now,
    no meta). For the PersistentScheduler, returns the equivalent beat_schedule instead."""
    if args.scheduler == "persistent":
        from celery.schedules import schedule
        return {f"{name}{i}": {"task": "bench.noop", "schedule": schedule(every)} for i in range(count)}
    client = redis.Redis.from_url(args.schedule_url)
    pipe = client.pipeline(transaction=False)
    for i in range(count):
        key = f"redbeat:{name}{i}"
        slot = first_slot(i)
        fields = {"definition": INTERVAL_ENTRY.format(name=f"{name}{i}", every=every)}
        if slot is not None:
            fields["meta"] = meta_json(slot - every)
        pipe.hset(key, mapping=fields)
        pipe.zadd("redbeat::schedule", {key: slot or 0})
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    return {}


class RoundTrips:
    """Counts what redis-py sends to the schedule server: one send is one round trip."""

    def __init__(self, port: int) -> None:
        from redis.connection import AbstractConnection
        self.count = 0
        self.port = port
        original = AbstractConnection.send_packed_command
        counter = self

        def counting(conn, command, check_health=True):
            if getattr(conn, "port", None) == counter.port:
                counter.count += 1
            return original(conn, command, check_health)
        AbstractConnection.send_packed_command = counting


def broker_count(args: argparse.Namespace) -> int:
    return redis.Redis.from_url(args.broker_url).llen("celery")


# -- measurements --------------------------------------------------------------------------

def measure_sendtask(args: argparse.Namespace) -> dict:
    """Celery's own publishing rate on one producer: the ceiling for any scheduler.
    With ``--batch N``, in kombu batches of N messages (``Producer.batch``, kombu 5.7+)."""
    import contextlib
    app = make_app(args)
    with app.producer_or_acquire() as producer:
        app.send_task("bench.noop", producer=producer)
        started = time.perf_counter()
        for start in range(0, args.n, args.batch or args.n):
            batch = producer.batch(max_size=1_000_000) if args.batch else contextlib.nullcontext()
            with batch:
                for _ in range(min(args.batch or args.n, args.n - start)):
                    app.send_task("bench.noop", producer=producer)
        elapsed = time.perf_counter() - started
    sent = broker_count(args) - 1
    return {"messages": sent, "batch": args.batch, "seconds": elapsed, "per_second": sent / elapsed}


class Scraper:
    """Scrapes beat's metrics endpoint once a second in a thread, as Prometheus would."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.scrapes = 0
        self.failures = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        import urllib.request
        while True:
            try:
                with urllib.request.urlopen(self.url, timeout=5) as reply:
                    reply.read()
                self.scrapes += 1
            except OSError:
                self.failures += 1
            if self.stopping.wait(1.0):
                return

    def stop(self) -> dict:
        self.stopping.set()
        self.thread.join(timeout=10)
        return {"scrapes": self.scrapes, "scrape_failures": self.failures}


def free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_drain(args: argparse.Namespace) -> dict:
    """Time to dispatch ``n`` entries that are all due at once. With ``--metrics``, beat serves
    its metrics (redbeat_metrics_port) and a thread scrapes them once a second meanwhile."""
    port = free_port() if args.metrics else None
    app = make_app(args, **({"redbeat_metrics_port": port} if port else {}))
    schedule = populate(args, args.n, 3600, lambda i: None)
    scheduler = make_scheduler(args, app, schedule)
    if port and args.without_schedule_view:
        from redbeat.schedulemetrics import ScheduleCollector
        registry = scheduler.metrics.registry
        for collector in [c for c in list(registry._collector_to_names) if isinstance(c, ScheduleCollector)]:
            registry.unregister(collector)
    scraper = Scraper(port) if port else None
    if args.scheduler == "persistent":
        for entry in scheduler.schedule.values():
            entry.last_run_at = entry.last_run_at.replace(year=2000)
        scheduler._heap = None
    started = time.perf_counter()
    deadline = started + args.timeout
    while broker_count(args) < args.n and time.perf_counter() < deadline:
        scheduler.tick()
    elapsed = time.perf_counter() - started
    sent = broker_count(args)
    scraped = scraper.stop() if scraper else {}
    scheduler.close()
    return {"entries": args.n, "dispatched": sent, "seconds": elapsed, "per_second": sent / elapsed,
            "metrics": bool(port), "schedule_view": bool(port) and not args.without_schedule_view, **scraped}


def measure_roundtrips(args: argparse.Namespace) -> dict:
    """Round trips to the schedule server for one tick with 1, 100 and 1,000 entries due."""
    counter = RoundTrips(int(args.schedule_url.rsplit(":", 1)[1].split("/")[0]))
    app = make_app(args)
    client = redis.Redis.from_url(args.schedule_url)
    results = {}
    for due in (1, 100, 1000):
        client.flushdb()
        populate(args, due, 3600, lambda i: None, name=f"d{due}-")
        scheduler = make_scheduler(args, app)
        scheduler.tick()  # the first tick of ours writes statics and takes the lock: not a steady tick
        populate(args, due, 3600, lambda i: None, name=f"r{due}-")
        before = counter.count
        scheduler.tick()
        results[str(due)] = counter.count - before
        idle_before = counter.count
        scheduler.tick()
        results.setdefault("idle", counter.count - idle_before)
        scheduler.close()
    return {"round_trips_per_tick": results}


def measure_timeliness(args: argparse.Namespace) -> dict:
    """``n`` entries every second for ``seconds``: share of slots dispatched, lateness, drift."""
    from celery.beat import Service

    app = make_app(args)
    start = time.time() + 3.0
    phase = (lambda i: start + i / args.n) if args.spread else (lambda i: start)
    schedule = populate(args, args.n, 1.0, phase)
    dispatched: list[list] = []  # [name, when it reached the broker]
    buffered: list[list] = []  # published into a kombu batch, not sent yet
    cls = scheduler_class(args)
    original = cls.apply_async

    def recording(self, entry, producer=None, advance=True, **kwargs):
        result = original(self, entry, producer=producer, advance=advance, **kwargs)
        record = [entry.name, time.time()]
        dispatched.append(record)
        buffered.append(record)
        return result
    cls.apply_async = recording
    import kombu.transport.redis as kombu_redis
    batch_class = getattr(kombu_redis, "PublishBatch", None)  # kombu 5.7 and later
    if batch_class is not None:
        # A message in a batch reaches the broker when the batch is flushed:
        # that is its dispatch time, not when it was handed to kombu.
        flush = batch_class.flush

        def flushing(self):
            flush(self)
            sent_at = time.time()
            for record in buffered:
                record[1] = sent_at
            buffered.clear()
        batch_class.flush = flushing
    if args.scheduler == "persistent":
        app.conf.beat_schedule = schedule
    service = Service(app, max_interval=1, scheduler_cls=cls,
                      schedule_filename=os.path.join(tempfile.mkdtemp(), "beat-schedule"))
    thread = threading.Thread(target=service.start, daemon=True)
    thread.start()
    end = start + args.seconds
    time.sleep(max(end - time.time(), 0) + 1.5)
    service.stop()
    thread.join(timeout=10)
    window = [(name, at) for name, at in dispatched if start - 0.5 <= at < end + 1.0]
    per_entry: dict[str, list[float]] = {}
    for name, at in window:
        per_entry.setdefault(name, []).append(at)
    lateness = []
    for i in range(args.n):
        first = phase(i) if args.scheduler != "persistent" else None
        for at in per_entry.get(f"e{i}", []):
            if first is not None:
                lateness.append((at - first) % 1.0 if (at - first) % 1.0 < 0.9 else 0.0)
    expected = args.n * args.seconds
    counts = [len(per_entry.get(f"e{i}", [])) for i in range(args.n)]
    firsts_to_sixtieth = [times[args.seconds - 1] - times[0] for times in per_entry.values()
                          if len(times) >= args.seconds]
    lateness.sort()
    return {
        "entries": args.n, "seconds": args.seconds, "spread": args.spread,
        "slots_expected": expected, "slots_dispatched": sum(min(c, args.seconds) for c in counts),
        "share_dispatched": sum(min(c, args.seconds) for c in counts) / expected,
        "lateness_p50_ms": 1000 * statistics.median(lateness) if lateness else None,
        "lateness_p99_ms": 1000 * lateness[int(len(lateness) * 0.99) - 1] if lateness else None,
        "lateness_max_ms": 1000 * lateness[-1] if lateness else None,
        "sixtieth_after_first_s_median": statistics.median(firsts_to_sixtieth) if firsts_to_sixtieth else None,
    }


def rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def measure_startup(args: argparse.Namespace) -> dict:
    """Time from creating the scheduler to the end of its first tick, and the memory it took.
    The schedule was filled beforehand (``populate`` command) with entries due far ahead."""
    app = make_app(args)
    if args.scheduler == "persistent":
        from celery.schedules import schedule as interval
        app.conf.beat_schedule = {f"e{i}": {"task": "bench.noop", "schedule": interval(86400)} for i in range(args.n)}
    import redbeat  # noqa: F401 - imports are not start-up
    before = rss_kb()
    started = time.perf_counter()
    scheduler = make_scheduler(args, app, app.conf.beat_schedule)
    scheduler.tick()
    elapsed = time.perf_counter() - started
    after = rss_kb()
    scheduler.close()
    return {"entries": args.n, "seconds": elapsed, "rss_growth_mb": (after - before) / 1024, "rss_mb": after / 1024}


def measure_fill(args: argparse.Namespace) -> dict:
    """Fill the schedule with ``n`` entries due in a day; report Redis memory per entry."""
    client = redis.Redis.from_url(args.schedule_url)
    client.flushdb()
    base = client.info("memory")["used_memory"]
    populate(args, args.n, 86400, lambda i: time.time() + 86400 + i % 3600)
    used = client.info("memory")["used_memory"]
    return {"entries": args.n, "redis_bytes_per_entry": (used - base) / max(args.n, 1)}


def measure_save(args: argparse.Namespace) -> dict:
    """Saving ``n`` entries from Python: the batched API where there is one, else one by one."""
    from celery.schedules import schedule

    from redbeat import RedBeatSchedulerEntry
    app = make_app(args)
    redis.Redis.from_url(args.schedule_url).flushdb()
    entries = [RedBeatSchedulerEntry(f"s{i}", "bench.noop", schedule(60), args=[i], app=app) for i in range(args.n)]
    started = time.perf_counter()
    if hasattr(RedBeatSchedulerEntry, "save_many"):
        RedBeatSchedulerEntry.save_many(entries, app=app)
        how = "save_many"
    else:
        for entry in entries:
            entry.save()
        how = "save"
    elapsed = time.perf_counter() - started
    return {"entries": args.n, "api": how, "seconds": elapsed, "per_second": args.n / elapsed}


def measure_list(args: argparse.Namespace) -> dict:
    """Listing every entry with the command line (``redbeat list --json``)."""
    import subprocess
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "redbeat.cli", "--redis-url", args.schedule_url, "list", "--json"],
                            capture_output=True, timeout=600)
    elapsed = time.perf_counter() - started
    listed = len(json.loads(result.stdout)) if result.returncode == 0 else 0
    return {"entries": listed, "seconds": elapsed, "per_second": listed / elapsed if elapsed else None}


def measure_census(args: argparse.Namespace) -> dict:
    """One reading of the schedule-wide view (``census.snapshot``: what ``redbeat metrics`` and beat's
    endpoint read per refresh) of ``n`` entries: its time, the Python memory it peaks at, and the
    longest the census script held Redis up (one chunk)."""
    import tracemalloc

    from redbeat.census import snapshot
    app = make_app(args)
    client = redis.Redis.from_url(args.schedule_url)
    client.flushdb()
    populate(args, args.n, 86400, lambda i: time.time() + 86400 + i % 3600)
    snapshot(app)  # loads the script and connects: not part of a refresh
    client.config_resetstat()
    started = time.perf_counter()
    reading = snapshot(app)
    elapsed = time.perf_counter() - started
    stats = client.info("commandstats").get("cmdstat_evalsha", {})
    tracemalloc.start()
    snapshot(app)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"entries": args.n, "counted": sum(reading.census.by_state().values()), "seconds": elapsed,
            "peak_mb": peak / 2**20, "script_calls": stats.get("calls"),
            "script_ms_per_call": stats.get("usec_per_call", 0) / 1000}


def measure_metricscost(args: argparse.Namespace) -> dict:
    """What beat's metrics cost, piece by piece, for ``n`` entries due at once (the drain's
    schedule), in CPU seconds of the beat process: counting a run published (the lateness
    histogram), one scrape of a served registry (the schedule-wide reading cached), and one
    schedule-wide reading (with how long it took Redis)."""
    from prometheus_client import generate_latest

    from redbeat.beatmetrics import PrometheusBeatMetrics
    from redbeat.census import snapshot
    from redbeat.schedulemetrics import ScheduleCollector
    app = make_app(args)
    populate(args, args.n, 3600, lambda i: None)
    metrics = PrometheusBeatMetrics()
    metrics.registry.register(ScheduleCollector(app))
    generate_latest(metrics.registry)  # the first scrape reads the schedule
    cpu = time.process_time()
    for _ in range(args.n):
        metrics._lateness.observe(0.01)
    per_run = (time.process_time() - cpu) / args.n
    cpu = time.process_time()
    for _ in range(20):
        generate_latest(metrics.registry)
    per_scrape = (time.process_time() - cpu) / 20
    cpu, started = time.process_time(), time.perf_counter()
    snapshot(app)
    return {"entries": args.n, "cpu_per_run_us": 1e6 * per_run, "cpu_per_scrape_ms": 1000 * per_scrape,
            "reading_cpu_ms": 1000 * (time.process_time() - cpu), "reading_ms": 1000 * (time.perf_counter() - started)}


# Runs the command given in its argv after the report file, and writes its time and rusage there. The
# kernel counts into a process's peak memory what its parent held at the fork (and the exec): started
# from this small process, a command's peak is its own, not the harness's.
LAUNCHER = """
import json, os, sys, time
report, command = sys.argv[1], sys.argv[2:]
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.execv(command[0], command)
_, status, usage = os.wait4(pid, 0)
with open(report, "w") as out:
    json.dump({"seconds": time.perf_counter() - started, "peak_mb": usage.ru_maxrss / 1024,
               "code": os.waitstatus_to_exitcode(status)}, out)
"""


def run_command(*arguments: str, output: str = os.devnull) -> dict:
    """Run one ``redbeat`` command in a process of its own, its stdout to ``output``: its
    time and its peak memory (maximum resident set, from the kernel's accounting of that process)."""
    import subprocess
    with tempfile.NamedTemporaryFile("r", suffix=".json") as report, open(output, "w") as out:
        done = subprocess.run([sys.executable, "-S", "-c", LAUNCHER, report.name, sys.executable, "-m", "redbeat.cli",
                               *arguments], stdout=out, stderr=subprocess.PIPE, timeout=1800)
        measured = json.load(report)
    if measured["code"] != 0 or done.returncode != 0:
        raise SystemExit(f"redbeat {' '.join(arguments)} failed: {done.stderr.decode()[-2000:]}")
    return measured


def measure_manage(args: argparse.Namespace) -> dict:
    """The management commands over ``n`` entries, each a process of its own (time, peak memory):
    ``import --apply`` of a file of ``{name: spec}`` into an empty schedule, ``list`` (the table),
    ``export`` in both formats, ``import`` of an export (a dry run: all unchanged), and
    ``import --apply`` of the specs export into an empty schedule."""
    url = ["--redis-url", args.schedule_url]
    client = redis.Redis.from_url(args.schedule_url)
    client.flushdb()
    folder = tempfile.mkdtemp(prefix="redbeat-bench-manage-")
    specs, exported, decoded = (os.path.join(folder, name) for name in ("specs.json", "export.json", "decoded.json"))
    # Written a line at a time: a command's peak memory counts its parent's at the fork, which must stay small.
    with open(specs, "w") as out:
        out.write("{\n" + ",\n".join(json.dumps(f"e{i}") + ": " + json.dumps(
            {"task": "bench.noop", "schedule": 60 + i % 600, "args": [i]}) for i in range(args.n)) + "\n}\n")
    result: dict = {"entries": args.n, "baseline_peak_mb": run_command(*url, "--version")["peak_mb"]}
    steps = [("import_specs_apply", ["import", specs, "--apply"], os.devnull),
             ("list", ["list"], os.devnull),
             ("list_limit", ["list", "--limit", "20"], os.devnull),
             ("list_match", ["list", "--match", "e1234*"], os.devnull),
             ("export", ["export"], exported),
             ("export_specs", ["export", "--format", "specs"], decoded),
             ("import_export_dry", ["import", exported], os.devnull)]
    for label, arguments, output in steps:
        measured = run_command(*url, *arguments, output=output)
        result.update({f"{label}_seconds": measured["seconds"], f"{label}_peak_mb": measured["peak_mb"]})
    result["export_mb"] = os.path.getsize(exported) / 2**20
    result["export_specs_mb"] = os.path.getsize(decoded) / 2**20
    client.flushdb()
    measured = run_command(*url, "import", decoded, "--apply")
    result.update({"import_export_apply_seconds": measured["seconds"],
                   "import_export_apply_peak_mb": measured["peak_mb"], "imported": client.zcard("redbeat::schedule")})
    shutil.rmtree(folder, ignore_errors=True)
    return result


def measure_workerevents(args: argparse.Namespace) -> dict:
    """The worker-side cost of run outcomes (``redbeat.worker``), per task, next to a task's own
    overhead in Celery: ``n`` runs of an empty task through Celery's tracer (``apply``: what a
    worker does around a task, without the broker); then the recorder's two events of a run
    (started, then succeeded: one Redis round trip each, to the schedule's redis-server on
    loopback), and its cost for a task that did not come from RedBeat (no header)."""
    from types import SimpleNamespace

    app = make_app(args)
    client = redis.Redis.from_url(args.schedule_url)
    client.flushdb()

    @app.task(name="bench.noop")
    def noop() -> None:
        return None

    def per_task(run: Callable[[int], object]) -> float:
        run(-1)  # warm: connections, scripts, first-call costs
        started = time.perf_counter()
        for i in range(args.n):
            run(i)
        return (time.perf_counter() - started) / args.n * 1e6

    celery_us = per_task(lambda i: noop.apply())
    from redbeat.worker import EventRecorder
    recorder = EventRecorder()
    ours = SimpleNamespace(app=app, request=SimpleNamespace(redbeat_key="redbeat:bench", redbeat_scheduled=time.time(),
                                                            hostname="celery@bench", retries=0))
    theirs = SimpleNamespace(app=app, request=SimpleNamespace(hostname="celery@bench", retries=0))

    def run_of(task: Any) -> Callable[[int], object]:
        def run(i: int) -> None:
            task.request.id = f"t-{i}"
            recorder.claim(task)
            recorder.finished(task, f"t-{i}", "SUCCESS", None)
        return run

    redbeat_us = per_task(run_of(ours))
    ping_us = per_task(lambda i: client.ping())
    other_ns = per_task(run_of(theirs)) * 1000
    return {"runs": args.n, "celery_task_us": celery_us, "redbeat_run_us": redbeat_us, "other_task_ns": other_ns,
            "ping_us": ping_us, "events": client.llen("redbeat::worker-events:bench")}


def drain_with_worker(args: argparse.Namespace, imports: str, from_redbeat: bool) -> float:
    """Microseconds per task of a real worker (solo pool, acks late) draining ``n`` empty
    tasks from the Redis broker: from its fetch of the first tenth until none is queued or
    unacknowledged.
    ``from_redbeat``: the messages carry RedBeat's headers (one entry's runs, each its own id)."""
    import subprocess

    broker, schedule = redis.Redis.from_url(args.broker_url), redis.Redis.from_url(args.schedule_url)
    broker.flushdb()
    schedule.flushdb()
    app = make_app(args)
    with app.producer_or_acquire() as producer:
        for i in range(args.n):
            headers = {"redbeat_key": "redbeat:bench", "redbeat_scheduled": float(i)} if from_redbeat else {}
            app.send_task("bench.noop", task_id=f"w-{i}", headers=headers, producer=producer)
    env = dict(os.environ, BENCH_BROKER_URL=args.broker_url, BENCH_SCHEDULE_URL=args.schedule_url,
               BENCH_IMPORTS=imports)
    with tempfile.TemporaryFile() as log:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workerapp", "worker", "-P", "solo",
                                   "-l", "warning", "--without-gossip", "--without-mingle", "--without-heartbeat"],
                                  cwd=os.path.dirname(os.path.abspath(__file__)), env=env, stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + args.timeout
            # The worker's start and its first tasks (connections, scripts) are not what is measured.
            while (queued := broker.llen("celery")) > args.n * 0.9:
                if time.monotonic() > deadline or worker.poll() is not None:
                    log.seek(0)
                    raise SystemExit(f"the worker did not start: {log.read()[-2000:]!r}")
                time.sleep(0.001)
            started = time.perf_counter()
            while broker.llen("celery") or broker.hlen("unacked"):
                if time.monotonic() > deadline:
                    raise SystemExit("the worker did not drain the queue in time")
                time.sleep(0.002)
            seconds = time.perf_counter() - started
        finally:
            worker.terminate()
            worker.wait(timeout=60)
    return seconds / queued * 1e6


def measure_workerloop(args: argparse.Namespace) -> dict:
    """What ``redbeat.worker`` adds to a real worker's own cost per task: ``n`` empty tasks
    drained by a solo worker without it, with it for tasks not from RedBeat, and with it for
    RedBeat's runs (the claim and the end: two scripts on the schedule's redis-server). Each
    twice, in the order A B C C B A, and averaged: a small machine drifts as it runs."""
    schedule = redis.Redis.from_url(args.schedule_url)
    variants = {"worker_without_us": ("", True), "worker_plain_us": ("redbeat.worker", False),
                "worker_redbeat_us": ("redbeat.worker", True)}
    times: dict[str, list[float]] = {name: [] for name in variants}
    script_us, succeeded = [], []
    for name in [*variants, *reversed(variants)]:
        schedule.config_resetstat()
        times[name].append(drain_with_worker(args, *variants[name]))
        if name == "worker_redbeat_us":
            # Redis's own time per script: the rest of a round trip is the network and the processes.
            script_us.append(schedule.info("commandstats")["cmdstat_evalsha"]["usec_per_call"])
            succeeded.append(int(schedule.hget("redbeat::run-outcomes", "outcome:succeeded") or 0))
    return {"runs": args.n, **{name: statistics.mean(values) for name, values in times.items()},
            "script_server_us": statistics.mean(script_us), "succeeded": succeeded}


# What the dashboard's pages are timed on: (label, path). The schedule in next-run order is
# ranged by rank; a name search and a state filter scan; sorting by name reads every name.
WEB_PAGES = [
    ("schedule_html", "/schedule"), ("schedule_api", "/api/entries"),
    ("deep_page_html", "/schedule?page=1000"), ("deep_page_api", "/api/entries?page=1000"),
    ("due_api", "/api/entries?state=due"),
    ("name_search_html", "/schedule?name=e1234"), ("name_search_api", "/api/entries?name=e1234"),
    ("task_search_api", "/api/entries?task=bench.noop&size=50"),
    ("state_filter_api", "/api/entries?state=paused"), ("name_sort_api", "/api/entries?sort=name"),
    ("entry_html", "/entry?name=e5"), ("overview_html", "/"), ("overview_api", "/api/overview"),
]


def measure_web(args: argparse.Namespace) -> dict:
    """The dashboard's pages over ``n`` entries (1% paused): a real ``redbeat web`` process, each
    page fetched ``--requests`` times over one kept-alive HTTP connection as a browser does; the
    median time of each, from the request sent to the last byte read, in ms."""
    import http.client
    import re
    import signal
    import subprocess

    client = redis.Redis.from_url(args.schedule_url)
    client.flushdb()
    populate(args, args.n, 86400, lambda i: time.time() + 3600 + i % 86400)
    paused = INTERVAL_ENTRY.replace('"enabled": true', '"enabled": false')
    for i in range(0, args.n, 100):
        client.hset(f"redbeat:e{i}", "definition", paused.format(name=f"e{i}", every=86400))
    log = tempfile.NamedTemporaryFile("w+", suffix=".log")
    server = subprocess.Popen([sys.executable, "-m", "redbeat.cli", "--redis-url", args.schedule_url, "web",
                               "--port", "0"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"at http://127\.0\.0\.1:(\d+)/", open(log.name).read())):
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("redbeat web did not start: " + open(log.name).read())
            time.sleep(0.05)
        connection = http.client.HTTPConnection("127.0.0.1", int(found.group(1)), timeout=60)

        def fetch(path: str) -> float:
            started = time.perf_counter()
            connection.request("GET", path)
            reply = connection.getresponse()
            reply.read()
            if reply.status != 200:
                raise SystemExit(f"GET {path}: {reply.status}")
            return 1000 * (time.perf_counter() - started)

        result: dict = {"entries": args.n, "requests": args.requests, "first_overview_ms": fetch("/")}
        for label, path in WEB_PAGES:
            fetch(path)  # warms what is cached for a while (the overview's census), as an open tab has
            result[f"{label}_ms"] = statistics.median(fetch(path) for _ in range(args.requests))
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
        log.close()


MEASUREMENTS = {
    "sendtask": measure_sendtask, "drain": measure_drain, "roundtrips": measure_roundtrips,
    "timeliness": measure_timeliness, "startup": measure_startup, "fill": measure_fill,
    "save": measure_save, "list": measure_list, "census": measure_census,
    "metricscost": measure_metricscost, "manage": measure_manage, "workerevents": measure_workerevents,
    "workerloop": measure_workerloop,
    "web": measure_web,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("measurement", choices=sorted(MEASUREMENTS))
    parser.add_argument("--schedule-url", required=True)
    parser.add_argument("--broker-url", required=True)
    parser.add_argument("--scheduler", choices=["redbeat", "persistent"], default="redbeat")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--spread", action="store_true")
    parser.add_argument("--batch", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--requests", type=int, default=21, help="web: fetches of each page (median)")
    parser.add_argument("--metrics", action="store_true", help="drain: serve beat's metrics and scrape them")
    parser.add_argument("--without-schedule-view", action="store_true",
                        help="drain --metrics: beat's own metrics only, not the schedule-wide gauges")
    args = parser.parse_args()
    import logging
    logging.basicConfig(level=logging.ERROR)
    result = MEASUREMENTS[args.measurement](args)
    import redbeat
    result["version"] = getattr(redbeat, "__version__", "2.x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
