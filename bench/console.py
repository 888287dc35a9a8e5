"""The web console with many jobs held: how long each page takes to show its data.

Starts a node from this checkout (publish_on_register false, so no broker traffic),
fills it with --jobs jobs through POST /api/jobs/batch (a slice of them failed by
reports), then opens every page of the console in headless Chromium (selenium, as
tests/integration/test_console.py) --loads times and reports the time from navigation
to the page saying its data is shown (#view[data-state=ready]), median and max.

    python bench/console.py --jobs 1000000 --write docs/BENCHMARKS.md
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def post(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def put(port, path, body):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="PUT")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read())


def fill(port, n, failed, schedules):
    t0 = time.monotonic()
    for i in range(schedules):          # daily: none fires during the run
        put(port, f"/api/schedules/s-{i}", {"cron": f"{i % 60} 3 * * *",
                                            "job": {"type": "report"}})
    for start in range(0, n, 1000):
        items = [{"id": f"c-{i}", "type": ("email", "resize", "invoice")[i % 3],
                  "priority": ("HIGH", "MEDIUM", "LOW")[i % 3], "payload": {"n": i}}
                 for i in range(start, min(n, start + 1000))]
        out = post(port, "/api/jobs/batch", {"jobs": items})
        assert out["accepted"] == len(items), out
        if start and start % 100_000 == 0:
            print(f"[console] {start} jobs", file=sys.stderr)
    for i in range(failed):
        for status in ("running", "failed"):
            post(port, "/api/jobs/status", {"jobId": f"c-{i}", "status": status,
                                            "workerId": "w-bench", "errorMessage": "bench"})
    return time.monotonic() - t0


def driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--disable-background-networking"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def load_seconds(d, url, page, timeout_s=60):
    d.get("about:blank")
    t0 = time.monotonic()
    d.get(url)
    while time.monotonic() - t0 < timeout_s:
        state = d.execute_script(
            "var v = document.getElementById('view');"
            "return [document.body && document.body.dataset.page, v && v.dataset.state];")
        if state == [page, "ready"]:
            return time.monotonic() - t0
        if state[1] == "error":
            raise RuntimeError(f"{url}: the page says error")
        time.sleep(0.005)
    raise RuntimeError(f"{url}: not ready within {timeout_s} s")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--failed", type=int, default=500, help="jobs failed by reports")
    p.add_argument("--loads", type=int, default=5, help="loads of each page")
    p.add_argument("--schedules", type=int, default=100)
    p.add_argument("--write", metavar="FILE")
    a = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="dq-console-bench-")
    node = common.start_node(ROOT, tmp, "console", publish_on_register="false",
                             snapshot_entries=10_000_000)
    try:
        fill_s = fill(node.port, a.jobs, a.failed, a.schedules)
        rss = common.rss_bytes(node.proc.pid)
        base = f"http://127.0.0.1:{node.port}/ui/"
        pages = [("overview", "#/", "overview"), ("jobs", "#/jobs", "jobs"),
                 ("jobs, filtered", "#/jobs?status=failed&type=email", "jobs"),
                 ("a job", "#/job/c-7", "job"), ("failed", "#/failed", "failed"),
                 ("workers", "#/workers", "workers"),
                 ("schedules", "#/schedules", "schedules"),
                 ("a schedule", "#/schedule/s-7", "schedule")]
        d = driver()
        rows = []
        try:
            for name, hash_, page in pages:
                times = sorted(load_seconds(d, base + hash_, page) for _ in range(a.loads))
                rows.append((name, hash_, statistics.median(times), times[-1]))
        finally:
            d.quit()
    finally:
        node.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = (f"### The web console with {a.jobs:,} jobs held\n\n"
            f"- {common.machine_line(ROOT)}\n"
            f"- command: `python bench/console.py --jobs {a.jobs} --loads {a.loads} "
            f"--schedules {a.schedules}`\n"
            f"- one node (publish_on_register false), {a.jobs:,} jobs registered through "
            f"POST /api/jobs/batch in {fill_s:.0f} s, {a.failed} of them failed by reports, "
            f"{a.schedules} daily schedules; "
            f"node RSS {rss / 2**20:,.0f} MiB. Headless Chromium opens each page "
            f"{a.loads} times; the time runs from navigation until the page says its data "
            f"is shown.\n\n"
            "| page | route | median ms | max ms |\n|---|---|--:|--:|\n"
            + "".join(f"| {n} | `{h}` | {m * 1000:,.0f} | {x * 1000:,.0f} |\n"
                      for n, h, m, x in rows))
    print(text)
    if a.write:
        common.replace_section(a.write, "console", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
