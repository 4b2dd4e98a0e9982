"""``./run.sh demo`` (demo/run_demo.py): it runs with no standard input, prints the dashboard's
address, the dashboard answers there while the demo runs, and the demo ends by itself, 0."""

from __future__ import annotations

import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
from conftest import ROOT

pytestmark = pytest.mark.e2e


def test_the_demo_serves_the_dashboard_at_the_address_it_prints_and_ends_by_itself():
    demo = subprocess.Popen([sys.executable, str(ROOT / "demo" / "run_demo.py"), "--seconds", "6"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=ROOT)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in demo.stdout or ()], daemon=True)
    reader.start()
    output, page = [], None
    deadline = time.monotonic() + 60
    try:
        while reader.is_alive() or not lines.empty():  # the reader ends when the demo's output does
            assert time.monotonic() < deadline, "the demo did not end within 60 s:\n" + "".join(output)
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            output.append(line)
            found = re.search(r"==> the dashboard: open (http://127\.0\.0\.1:\d+/)", line)
            if found:
                with urllib.request.urlopen(found.group(1), timeout=10) as reply:
                    page = reply.read().decode()
    finally:
        if demo.poll() is None:
            demo.kill()
        demo.wait(timeout=10)
    text = "".join(output)
    assert demo.returncode == 0, text
    assert page is not None and 'data-page="overview"' in page, text
    assert "an entry added with redis-cli while beat runs" in text
