"""The web console (dqorch/ui) in real headless Chromium, driven by selenium, against a
real dqorch.py node and the real broker: what it shows equals what the API says, its
buttons change jobs (checked through the API), markup in job data stays text, and no
page logs an error, every page updates itself and passes axe-core's WCAG 2.1 AA rules
at 1280 and 390 px, light and dark. Writes a screenshot of each of those to
DQ_SCREENSHOTS_DIR (docs/screenshots for the README), else to the temp dir.

Needs chromium, chromedriver (scripts/browser-local.sh installs Debian's) and selenium
in the venv; the module is skipped when one of them cannot be found. Element ids are
listed at the top of dqorch/ui/app.js."""
from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.parse

import pytest

try:
    from selenium import webdriver
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
except ImportError:
    pytest.skip("selenium is not installed: .venv/bin/pip install selenium",
                allow_module_level=True)

from .conftest import wait_until
from .faults import drop_vhost, private_vhost

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))),
                None)
CHROMEDRIVER = shutil.which("chromedriver") or next(
    (p for p in ("/usr/lib/chromium/chromedriver",) if os.access(p, os.X_OK)), None)
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip("chromium or chromedriver not found: run scripts/browser-local.sh",
                allow_module_level=True)

# Every run writes a screenshot of each page; into the README's docs/screenshots only
# when asked (DQ_SCREENSHOTS_DIR=docs/screenshots), so a test run leaves the tree clean.
SHOTS = os.environ.get("DQ_SCREENSHOTS_DIR") or os.path.join(tempfile.gettempdir(),
                                                             "dqorch-screenshots")
TOKEN = "console-test-token-0123456789"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
STATUSES = ("waiting", "scheduled", "pending", "queued", "running", "completed", "failed", "cancelled")


# Fixtures ##################################################################

@pytest.fixture(scope="module")
def driver():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                # nothing but the node on loopback: no update or sync traffic
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-default-apps"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager would otherwise try to download one.
    d = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    d.set_page_load_timeout(30)
    yield d
    d.quit()


@pytest.fixture
def node(make_node, clean_queues):
    return make_node(job_max_retries=0).wait_healthy()


@pytest.fixture
def api(node):
    c = node.client()
    yield c
    c.close()


@pytest.fixture
def page(driver, node):
    p = Page(driver, node.http_port)
    driver.get("about:blank")
    driver.get_log("browser")              # start each test with an empty console
    yield p
    driver.get("about:blank")              # no page left polling a node that is stopped


@pytest.fixture
def vhost(shared_rabbit):
    """A vhost of this test's own on the shared broker, for a test that reads what
    RabbitMQ holds: other test runs purge and fill the job queues of "/"."""
    name = private_vhost()
    yield name
    drop_vhost(name)


@pytest.fixture
def page_of_own_vhost(driver, make_node, vhost):
    """(page, api) as the page and api fixtures give them, at a node on its own vhost."""
    node = make_node(job_max_retries=0, rabbitmq_vhost=vhost).wait_healthy()
    c = node.client()
    driver.get("about:blank")
    driver.get_log("browser")
    yield Page(driver, node.http_port), c
    driver.get("about:blank")
    c.close()


# Helpers ###################################################################

class Page:
    """The console at one node: open(hash) loads it fresh and waits until the page
    says its data is shown; find/finds/text read it, tolerating re-renders."""

    def __init__(self, driver, port: int) -> None:
        self.d = driver
        self.base = f"http://127.0.0.1:{port}/ui/"

    def open(self, hash_: str, page: str, ready: bool = True) -> None:
        # about:blank first: a hash change alone would not reload, and a fresh load
        # gives each page its own console log.
        self.d.get("about:blank")
        self.d.get(self.base + hash_)
        if ready:
            self.wait_ready(page)

    def render(self) -> int:
        """How many times the page has rendered (#view[data-render]); 0 before the first."""
        return int(self.d.execute_script(
            "var v = document.getElementById('view'); return (v && v.dataset.render) || 0"))

    def wait_ready(self, page: str, after: int = 0, timeout_s: float = 20) -> None:
        """Wait until `page` is shown by a render later than `after`."""
        def ready():
            state = self.d.execute_script(
                "var v = document.getElementById('view');"
                "return [document.body && document.body.dataset.page, v && v.dataset.state,"
                " v && Number(v.dataset.render || 0),"
                " (document.getElementById('error') || {}).textContent];")
            if state[2] <= after:
                return False
            if state[1] == "error":
                pytest.fail(f"page {page} failed to load: {state[3]}")
            return state[0] == page and state[1] == "ready"
        wait_until(ready, timeout_s, 0.05, f"page {page} ready")

    def click_and_wait(self, css: str, page: str) -> None:
        """Click something that navigates or reloads, and wait for the new render."""
        before = self.render()
        self.find(css).click()
        self.wait_ready(page, after=before)

    def confirm(self, expect: str, after: int | None = None, page: str | None = None) -> str:
        """Answer OK to the confirmation dialog, which must contain `expect`; with
        `page`, wait for the render after `after` (the action's reload)."""
        poll(lambda: self.find("#confirm").get_attribute("open") is not None,
             "the confirmation dialog")
        question = self.text("#confirm-text")
        assert expect in question, question
        self.find("#confirm-ok").click()
        if page is not None:
            self.wait_ready(page, after=after)
        return question

    def refreshes(self) -> int:
        return int(self.find("#view").get_attribute("data-refreshes") or 0)

    def finds(self, css: str) -> list:
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def find(self, css: str):
        return self.d.find_element(By.CSS_SELECTOR, css)

    def text(self, css: str):
        """The element's textContent (even when hidden), or None when absent."""
        try:
            return self.find(css).get_attribute("textContent")
        except (NoSuchElementException, StaleElementReferenceException):
            return None

    def row_ids(self, table: str) -> list:
        return self.d.execute_script(
            "return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr[data-id]'))"
            ".map(function (r) { return r.dataset.id; });", table)

    def severe_logs(self) -> list:
        return [e for e in self.d.get_log("browser") if e["level"] == "SEVERE"]

    def assert_console_clean(self) -> None:
        errors = self.severe_logs()
        assert errors == [], "browser console errors:\n" + "\n".join(e["message"] for e in errors)


def poll(predicate, what: str, timeout_s: float = 20):
    """wait_until, where a DOM re-render between two reads counts as 'not yet'."""
    def safe():
        try:
            return predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
    wait_until(safe, timeout_s, 0.1, what)


def register(api, **body) -> str:
    status, out = api.call("POST", "/api/jobs/register", body)
    assert status == 202, out
    return out["job_id"]


def report(api, job_id: str, status: str, **extra) -> None:
    code, out = api.call("POST", "/api/jobs/status",
                         dict({"jobId": job_id, "status": status, "workerId": "w-1"}, **extra))
    assert code == 200 and out["status"] == "updated", out


def job(api, job_id: str) -> dict:
    status, out = api.call("GET", "/api/jobs/" + urllib.parse.quote(job_id, safe=""))
    assert status == 200, out
    return out


def failed_job(api, job_id: str, error: str, **fields) -> str:
    register(api, id=job_id, **fields)
    report(api, job_id, "running")
    report(api, job_id, "failed", errorMessage=error)
    assert job(api, job_id)["status"] == "failed"       # the node runs with job_max_retries=0
    return job_id


def settled(api) -> None:
    """Wait until the broker confirmed every registered job (none left pending), so the
    counts stop moving under the test."""
    wait_until(lambda: api.call("GET", "/api/metrics")[1]["jobs"]["pending"] == 0, 20, 0.05,
               "every job confirmed by the broker")


def mixed_jobs(api) -> dict:
    """One or more jobs in each status, and a worker: {status: [ids]}."""
    out = {s: [] for s in STATUSES}
    for i in range(3):
        out["queued"].append(register(api, id=f"q-{i}", type="email",
                                      priority=["LOW", "MEDIUM", "HIGH"][i]))
    out["running"].append(register(api, id="r-0", type="invoice"))
    report(api, "r-0", "running")
    out["completed"].append(register(api, id="c-0", type="invoice", payload={"order": 17}))
    report(api, "c-0", "running")
    report(api, "c-0", "completed", result={"pdf": "s3://bucket/c-0.pdf"})
    out["failed"].append(failed_job(api, "f-0", "disk full on /var/spool", type="report"))
    out["cancelled"].append(register(api, id="x-0", type="email"))
    assert api.call("POST", "/api/jobs/x-0/cancel")[0] == 200
    code, _ = api.call("POST", "/api/workers/heartbeat",
                       {"workerId": "w-1", "worker_type": "python", "capacity": 4,
                        "current_load": 1})
    assert code == 200
    settled(api)
    return out


# Serving ###################################################################

def test_console_is_served_with_its_content_security_policy(node, api):
    status, _ = api.call("GET", "/")
    assert status == 302 and api.last_headers["Location"].endswith("/ui/"), api.last_headers
    for path in ("/ui/", "/ui/app.js", "/ui/style.css"):
        status, _ = api.call("GET", path)
        assert status == 200, path
        assert api.last_headers.get("Content-Security-Policy") == CSP, (path, api.last_headers)


# Overview ##################################################################

def test_overview_counts_equal_the_api(page, api, node):
    made = mixed_jobs(api)
    page.open("#/", "overview")

    def counts_match():
        metrics = api.call("GET", "/api/metrics")[1]
        ui = {s: page.text(f"#count-{s}") for s in STATUSES}
        queues = {q: {s: page.text(f'#queue-table tr[data-queue="{q}"] td[data-status="{s}"]')
                      for s in STATUSES} for q in metrics["queues"]}
        return (ui == {s: str(metrics["jobs"][s]) for s in STATUSES}
                and queues == {q: {s: str(n) for s, n in c.items()}
                               for q, c in metrics["queues"].items()})
    poll(counts_match, "overview counts equal /api/metrics")
    # The counts are not trivially equal: the jobs made above are there.
    shown = {s: int(page.text(f"#count-{s}")) for s in STATUSES}
    assert shown == {s: len(v) for s, v in made.items()}

    metrics = api.call("GET", "/api/metrics")[1]
    cluster = api.call("GET", "/api/cluster/status")[1]
    assert page.text("#workers-active") == str(metrics["workers"]["active"]) == "1"
    assert page.text("#workers-unresponsive") == str(metrics["workers"]["unresponsive"])
    assert page.text("#workers-total") == str(metrics["workers"]["total"])
    assert page.text("#broker-state") == "connected"
    assert page.text("#raft-role") == metrics["raft"]["role"] == "leader"
    assert page.text("#raft-term") == str(metrics["raft"]["term"])
    assert page.text("#raft-leader") == metrics["raft"]["leader"]
    assert page.text("#workers-stopped") == str(metrics["workers"]["stopped"]) == "0"
    # A single node is a cluster of one: no members table.
    assert len(cluster["members"]) == 1
    assert not page.find("#members-section").is_displayed()

    # The graph: one line per series, one point per second of the window, and the
    # totals under it equal the API's sums.
    def rates_match():
        rates = api.call("GET", "/api/rates")[1]
        return all(page.text(f"#rate-total-{s}") == str(sum(rates["series"][s]))
                   for s in ("registered", "completed", "failed"))
    poll(rates_match, "rate totals equal /api/rates")
    assert int(page.text("#rate-total-registered")) >= sum(len(v) for v in made.values())
    rates = api.call("GET", "/api/rates")[1]
    for s in ("registered", "completed", "failed"):
        points = page.find(f"#rates-graph polyline.line-{s}").get_attribute("points").split()
        assert len(points) == len(rates["series"][s]) == 600, s
    page.assert_console_clean()


def test_overview_refreshes_by_itself(page, api, node):
    page.open("#/", "overview")
    assert page.text("#count-queued") == "0"
    register(api, id="later")
    settled(api)
    poll(lambda: page.text("#count-queued") == "1",
         "the overview shows a job registered after it loaded")
    assert page.refreshes() >= 2
    page.assert_console_clean()


def queue_row(page, queue: str) -> dict:
    row = f'#queue-table tr[data-queue="{queue}"]'
    return dict({s: page.text(f'{row} td[data-status="{s}"]') for s in STATUSES},
                paused=page.find(row).get_attribute("data-paused"),
                ready=page.text(row + " td.col-ready"),
                consumers=page.text(row + " td.col-consumers"))


def test_overview_queues_show_rabbitmqs_counts_and_pause_and_resume(page_of_own_vhost):
    page, api = page_of_own_vhost
    for i in range(3):
        register(api, id=f"low-{i}", priority="LOW")
    settled(api)
    page.open("#/", "overview")

    def as_api(ready_low: str):
        def check():
            queues = api.call("GET", "/api/queues")[1]["queues"]
            want = {q["queue"]: dict({s: str(q["jobs"].get(s, 0)) for s in STATUSES},
                                     paused=str(q["paused"]).lower(),
                                     ready=str(q["rabbitmq"]["messages_ready"]),
                                     consumers=str(q["rabbitmq"]["consumers"]))
                    for q in queues}
            return (want["job.low"]["ready"] == ready_low
                    and {q: queue_row(page, q) for q in want} == want)
        return check
    # RabbitMQ holds the three and nobody consumes them.
    poll(as_api("3"), "the queue table equals /api/queues, 3 ready in job.low")
    assert queue_row(page, "job.low")["consumers"] == "0"
    assert queue_row(page, "job.low")["queued"] == "3"
    assert "not taken back by a pause" in page.text("#queue-help")

    before = page.render()
    page.find('#queue-table tr[data-queue="job.low"] button.btn-pause-queue').click()
    question = page.confirm("Pause job.low?", before, "overview")
    assert "not taken back" in question and "(3 messages ready)" in question, question
    paused = {q["queue"]: q["paused"] for q in api.call("GET", "/api/queues")[1]["queues"]}
    assert paused == {"job.high": False, "job.medium": False, "job.low": True}
    assert queue_row(page, "job.low")["paused"] == "true"
    assert queue_row(page, "job.high")["paused"] == "false"
    assert page.text('#queue-table tr[data-queue="job.low"] td.col-paused').startswith("paused")
    assert "job.low paused" in page.text("#notice")

    # Paused: a new job of that queue stays pending, and the page says so by itself.
    register(api, id="low-held", priority="LOW")
    assert "job.low is paused" in job(api, "low-held")["why"]
    poll(lambda: queue_row(page, "job.low")["pending"] == "1", "the held job, pending")

    page.click_and_wait('#queue-table tr[data-queue="job.low"] button.btn-resume-queue',
                        "overview")
    assert not any(q["paused"] for q in api.call("GET", "/api/queues")[1]["queues"])
    # Resumed: the held job is published, and RabbitMQ counts it.
    poll(as_api("4"), "the held job published after the resume")
    assert queue_row(page, "job.low")["queued"] == "4"
    assert page.finds('#queue-table tr[data-queue="job.low"] button.btn-pause-queue') != []
    page.assert_console_clean()


# Listing ###################################################################

def test_filter_narrows_the_listing(page, api, node):
    alpha = {register(api, id=f"alpha-{i}", type="alpha") for i in range(3)}
    beta = {register(api, id=f"beta-{i}", type="beta") for i in range(2)}
    page.open("#/jobs", "jobs")
    assert set(page.row_ids("#job-list")) == alpha | beta

    page.find("#filter-type").send_keys("alpha")
    page.click_and_wait("#filter-form button[type=submit]", "jobs")
    assert "type=alpha" in page.d.current_url
    api_ids = {j["id"] for j in api.call("GET", "/api/jobs?type=alpha")[1]["jobs"]}
    assert set(page.row_ids("#job-list")) == api_ids == alpha
    assert page.text("#job-count").startswith("3 matching")

    # A status filter through the select: nothing of type alpha has failed.
    Select(page.find("#filter-status")).select_by_value("failed")
    page.click_and_wait("#filter-form button[type=submit]", "jobs")
    assert "status=failed" in page.d.current_url and "type=alpha" in page.d.current_url
    assert page.row_ids("#job-list") == [] and page.text("#job-count").startswith("0 matching")
    page.assert_console_clean()


def test_pages_go_next_previous_first_and_last(page, api, node):
    ids = [register(api, id=f"p-{i}", type="paged") for i in range(5)]
    page.open("#/jobs?type=paged&limit=2", "jobs")
    assert page.finds("#btn-prev") == [] and page.finds("#btn-first") == []
    seen = []
    for want in (2, 2, 1):
        rows = page.row_ids("#job-list")
        assert len(rows) == want, rows
        seen += rows
        if want == 1:
            assert page.finds("#btn-next") == [], "the last page has no Next"
            break
        page.click_and_wait("#btn-next", "jobs")
    assert seen == list(reversed(ids)), "newest first, each job once"
    assert "offset=4" in page.d.current_url and page.text("#page-of") == "page 3 of 3"
    page.click_and_wait("#btn-prev", "jobs")
    assert page.row_ids("#job-list") == ["p-2", "p-1"]
    page.click_and_wait("#btn-first", "jobs")
    assert page.row_ids("#job-list") == ["p-4", "p-3"]
    page.click_and_wait("#btn-last", "jobs")
    assert page.row_ids("#job-list") == ["p-0"] and page.finds("#btn-last") == []
    page.assert_console_clean()


# One job ###################################################################

def test_job_page_shows_its_history(page, api, node):
    payload = {"order": 17, "lines": [{"sku": "A-1", "qty": 2}]}
    register(api, id="order-17", type="invoice", payload=payload)
    report(api, "order-17", "running")
    report(api, "order-17", "completed", result={"pdf": "s3://bucket/order-17.pdf"})
    want = job(api, "order-17")

    # Reach it the way a person would: the search box.
    page.open("#/jobs", "jobs")
    page.find("#search-id").send_keys("order-17")
    page.click_and_wait("#search-form button[type=submit]", "job")

    assert page.text("#job-id") == "order-17"
    assert page.text("#job-status") == "completed"
    assert page.text("#job-why") == want["why"]
    assert json.loads(page.text("#job-payload")) == payload
    assert json.loads(page.text("#job-result")) == {"pdf": "s3://bucket/order-17.pdf"}
    assert page.text("#job-payload") == json.dumps(payload, indent=2), "pretty-printed"
    items = page.finds("#job-history li")
    assert len(items) == len(want["history"]) >= 3
    for li, h in zip(items, want["history"]):
        assert li.find_element(By.CSS_SELECTOR, ".status").text == h["status"]
        assert li.find_element(By.CSS_SELECTOR, ".reason").text == h["reason"]
    assert [li.get_attribute("data-status") for li in items][-1] == "completed"
    for field in ("type", "queue", "worker_id", "priority"):
        assert page.text(f'#job-fields tr[data-field="{field}"] td') == str(want[field]), field
    assert page.finds("#btn-cancel") == [] and page.finds("#btn-retry") == [], \
        "completed: neither cancel nor retry"
    assert page.finds("#btn-discard") != [], "a finished job can be discarded"
    assert page.finds("#job-error") == [], "no error: no Error section"
    # Human labels, the worker as a link, times to the millisecond with the gaps.
    assert page.find('#job-fields tr[data-field="worker_id"] th').text == "Worker"
    assert page.find('#job-fields tr[data-field="worker_id"] a').get_attribute(
        "href").endswith("#/worker/w-1")
    assert page.text('#job-fields tr[data-field="retry_count"] td') == \
        f"retry {want['retry_count']} of {want['max_retries']}"
    first = items[0].find_element(By.CSS_SELECTOR, ".at").text
    assert len(first) == 12 and first[8] == ".", first        # 16:31:52.207
    assert items[1].find_element(By.CSS_SELECTOR, ".took").text.startswith("+")
    rows = page.finds("#job-attempts tbody tr")
    assert len(rows) == 1 and rows[0].find_element(By.CSS_SELECTOR, ".col-ran").text.endswith(" s")
    page.assert_console_clean()


def utc(ms: int) -> str:
    """The console's way of writing a time (app.js fmtTime)."""
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC")


def test_job_page_links_its_parents_and_says_when_it_runs(page, api, node):
    for parent in ("parent-a", "parent-b"):
        register(api, id=parent, type="etl")
    register(api, id="child-1", depends_on=["parent-a", "parent-b"], on_parent_failure="run")
    register(api, id="later-1", delay=3600)
    child = job(api, "child-1")
    assert child["status"] == "waiting" and child["on_parent_failure"] == "run"
    page.open("#/job/child-1", "job")
    assert page.text("#job-status") == "waiting"
    assert page.text("#job-why") == child["why"]
    links = page.finds('#job-fields tr[data-field="depends_on"] td a')
    assert [a.text for a in links] == child["depends_on"] == ["parent-a", "parent-b"]
    assert [a.get_attribute("href").split("#", 1)[1] for a in links] == \
        ["/job/parent-a", "/job/parent-b"]
    assert page.text('#job-fields tr[data-field="on_parent_failure"] td').startswith("run: ")
    assert page.finds('#job-fields tr[data-field="run_at"]') == [], "no time: no row"

    page.click_and_wait('#job-fields tr[data-field="depends_on"] td a', "job")
    assert page.text("#job-id") == "parent-a"
    assert page.finds('#job-fields tr[data-field="depends_on"]') == [], "no parents: no row"

    later = job(api, "later-1")
    page.open("#/job/later-1", "job")
    assert page.text("#job-status") == "scheduled"
    assert page.text('#job-fields tr[data-field="run_at"] td') == utc(later["run_at"])
    assert page.finds("#btn-cancel") != [], "a scheduled job can be cancelled"
    page.assert_console_clean()


def test_cancel_button_cancels_a_running_job(page, api, node):
    register(api, id="long-1", type="etl")
    report(api, "long-1", "running")
    page.open("#/job/long-1", "job")
    assert page.text("#job-status") == "running"
    assert page.finds("#btn-retry") == [], "a running job cannot be retried"

    page.click_and_wait("#btn-cancel", "job")            # it reloads the job when done
    wait_until(lambda: job(api, "long-1")["status"] == "cancelled", 20, 0.05,
               "the API says long-1 is cancelled")
    assert page.text("#job-status") == "cancelled"
    assert page.finds("#btn-cancel") == []
    assert page.finds("#btn-retry") != [], "a cancelled job can be retried"
    assert page.finds("#job-history li")[-1].get_attribute("data-status") == "cancelled"
    page.assert_console_clean()


def test_a_late_result_of_an_earlier_attempt_shows_in_the_history(page, api, node):
    """The cancelled attempt's worker finishes after the job was retried: its result
    is that attempt's, shown in its history entry, not as the job's result."""
    register(api, id="late-1", type="etl")
    report(api, "late-1", "running")
    assert api.call("POST", "/api/jobs/late-1/cancel")[0] == 200
    assert api.call("POST", "/api/jobs/late-1/retry")[0] == 202
    code, out = api.call("POST", "/api/jobs/status", {
        "jobId": "late-1", "status": "completed", "workerId": "w-1",
        "result": {"rows": 7}})
    assert (code, out) == (200, {"status": "ignored", "reason": "stale_attempt"})
    page.open("#/job/late-1", "job")
    late = [li for li in page.finds("#job-history li")       # (the retry's confirm may
            if li.find_elements(By.CSS_SELECTOR, ".late-result")]   # come after it)
    assert len(late) == 1
    assert late[0].find_element(By.CSS_SELECTOR, ".reason").text == \
        "attempt 1 completed late on w-1, result kept in history"
    assert json.loads(late[0].find_element(By.CSS_SELECTOR, ".late-result").text) == \
        {"rows": 7}
    assert page.text("#job-status") in ("pending", "queued")
    assert page.finds("#job-result") == [], "no result of its own: no Result section"
    page.assert_console_clean()


def test_a_refused_action_shows_the_api_message(page, api, node):
    register(api, id="raced-1")
    page.open("#/job/raced-1", "job")
    assert api.call("POST", "/api/jobs/raced-1/cancel")[0] == 200     # behind the page's back
    page.find("#btn-cancel").click()
    poll(lambda: "job is already cancelled" in (page.text("#error") or ""),
         "the 409's message on the page")
    assert page.find("#error").is_displayed()
    # The only console entry is the 409 itself.
    errors = page.severe_logs()
    assert len(errors) == 1 and "409" in errors[0]["message"], errors


def test_retry_button_makes_a_failed_job_pending_again(page, api, node):
    failed_job(api, "flaky-1", "connection reset by peer")
    page.open("#/job/flaky-1", "job")
    assert page.text("#job-status") == "failed"
    assert page.text("#job-error") == "connection reset by peer"
    assert page.finds("#btn-cancel") == [], "a failed job cannot be cancelled"

    page.click_and_wait("#btn-retry", "job")
    wait_until(lambda: job(api, "flaky-1")["status"] in ("pending", "queued"), 20, 0.05,
               "the API says flaky-1 is pending or queued again")
    assert page.text("#job-status") in ("pending", "queued")
    assert page.finds("#btn-retry") == [] and page.finds("#btn-cancel") != []
    page.assert_console_clean()


# Failed jobs ###############################################################

def test_failed_page_lists_errors_and_retries(page, api, node):
    errors = {"bad-1": "timeout talking to smtp", "bad-2": "KeyError: 'customer'",
              "bad-3": "out of memory"}
    for jid, msg in errors.items():
        failed_job(api, jid, msg, type="mail")
    register(api, id="fine-1")
    report(api, "fine-1", "running")
    report(api, "fine-1", "completed")
    page.open("#/failed", "failed")
    assert set(page.row_ids("#failed-list")) == set(errors)
    for jid, msg in errors.items():
        assert page.text(f'#failed-list tr[data-id="{jid}"] td.col-error_message') == msg
    assert page.text("#failed-count").startswith("3 failed")

    page.click_and_wait('#failed-list tr[data-id="bad-1"] button.btn-retry-one', "failed")
    wait_until(lambda: job(api, "bad-1")["status"] in ("pending", "queued"), 20, 0.05,
               "bad-1 retried")
    assert set(page.row_ids("#failed-list")) == {"bad-2", "bad-3"}, "bad-1 left the list"

    before = page.render()
    page.find("#btn-retry-all").click()
    page.confirm("Retry all 2 failed jobs?", before, "failed")
    wait_until(lambda: api.call("GET", "/api/jobs?status=failed")[1]["count"] == 0, 20, 0.05,
               "no failed jobs left")
    assert all(job(api, j)["status"] in ("pending", "queued") for j in errors)
    assert job(api, "fine-1")["status"] == "completed", "only failed jobs are retried"
    assert page.row_ids("#failed-list") == []
    poll(lambda: "Retried 2 jobs" in (page.text("#notice") or ""),
         "the page says how many were retried")
    page.assert_console_clean()


# Workers ###################################################################

def test_workers_page_lists_the_workers(page, api, node):
    for wid, load in (("w-a", 1), ("w-b", 3)):
        code, _ = api.call("POST", "/api/workers/heartbeat",
                           {"workerId": wid, "worker_type": "java", "capacity": 8,
                            "current_load": load})
        assert code == 200
    page.open("#/workers", "workers")
    want = api.call("GET", "/api/workers")[1]["workers"]
    assert set(page.row_ids("#worker-list")) == {w["worker_id"] for w in want} == {"w-a", "w-b"}
    for w in want:
        row = f'#worker-list tr[data-id="{w["worker_id"]}"]'
        assert page.text(row + " td.col-status") == w["status"] == "active"
        assert page.text(row + " td.col-load") == f'{w["current_load"]}/{w["capacity"]}'
        assert page.find(row + " td.col-worker_id a").get_attribute("href").endswith(
            "#/worker/" + w["worker_id"])
        assert page.text(row + " td.col-heartbeats") == str(w["heartbeats"])
    page.assert_console_clean()


# Schedules #################################################################

def put_schedule(api, schedule_id: str, **spec) -> dict:
    status, out = api.call("PUT", "/api/schedules/" + schedule_id, spec)
    assert status == 201, out
    return out


def schedule(api, schedule_id: str) -> dict:
    status, out = api.call("GET", "/api/schedules/" + schedule_id)
    assert status == 200, out
    return out


def utc_iso(iso: str) -> str:
    """An ISO-8601 tick of the API as the console writes it."""
    at = datetime.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    return utc(int(at.timestamp() * 1000))


def test_schedules_page_lists_schedules_and_its_buttons_work(page, api, node):
    put_schedule(api, "nightly", cron="30 2 * * *", timezone="Europe/Rome",
                 job={"type": "report"})
    put_schedule(api, "poll", every="2d", overlap="allow_all", job={"type": "poll"})
    page.open("#/schedules", "schedules")
    listed = api.call("GET", "/api/schedules")[1]["schedules"]
    assert page.row_ids("#schedule-list") == [s["id"] for s in listed] == ["nightly", "poll"]
    assert page.text("#schedule-count") == "2 schedules"
    row = '#schedule-list tr[data-id="nightly"]'
    assert page.text(row + " td.col-spec .spec") == "cron 30 2 * * *"
    assert page.text(row + " td.col-spec .zone") == "Europe/Rome"
    assert page.text(row + " td.col-overlap") == "skip"
    assert page.text(row + " td.col-state") == "active"
    # The next tick in UTC, then what the schedule's zone reads: 02:30 in Rome.
    assert page.text(row + " td.col-next .at") == utc_iso(listed[0]["next_runs"][0])
    assert page.text(row + " td.col-next .when").split(", ")[0] == "02:30 Europe/Rome"
    assert page.text(row + " td.col-fired") == "0"
    assert page.text(row + " td.col-last") == "—"
    assert page.text('#schedule-list tr[data-id="poll"] td.col-spec') == "every 2 d", \
        "every: no zone"
    assert page.text('#schedule-list tr[data-id="poll"] td.col-overlap') == "allow_all"

    # Pause: it says paused and has no next run; the other one goes on.
    page.click_and_wait(row + " button.btn-pause-schedule", "schedules")
    assert schedule(api, "nightly")["paused"] is True
    assert schedule(api, "poll")["paused"] is False
    assert page.text(row + " td.col-state") == "paused"
    assert page.text(row + " td.col-next") == "none while paused"
    assert "Schedule nightly paused" in page.text("#notice")
    page.click_and_wait(row + " button.btn-resume-schedule", "schedules")
    assert schedule(api, "nightly")["paused"] is False
    assert page.text(row + " td.col-state") == "active"

    # Trigger now: a run, its job linked in the last-run column.
    page.click_and_wait(row + " button.btn-trigger-schedule", "schedules")
    runs = schedule(api, "nightly")["last_runs"]
    assert len(runs) == 1 and runs[0]["job_id"].startswith("nightly@"), runs
    assert page.text(row + " td.col-fired") == "1"
    link = page.find(row + " td.col-last a")
    assert link.get_attribute("href").endswith(
        "#/job/" + urllib.parse.quote(runs[0]["job_id"], safe=""))
    assert link.text == utc_iso(runs[0]["scheduled_for"])
    poll(lambda: page.text(row + " td.col-last .status") ==
         schedule(api, "nightly")["last_runs"][0]["status"], "the run's status as the API's")
    assert runs[0]["job_id"] in page.text("#notice")

    # Delete asks first; the jobs it made stay.
    before = page.render()
    page.find(row + " button.btn-delete-schedule").click()
    page.confirm("Delete schedule nightly?", before, "schedules")
    assert api.call("GET", "/api/schedules/nightly")[0] == 404
    assert page.row_ids("#schedule-list") == ["poll"]
    assert job(api, runs[0]["job_id"])["id"] == runs[0]["job_id"]
    page.assert_console_clean()


def test_schedule_page_shows_next_and_last_runs_live(page, api, node):
    put_schedule(api, "hourly", every="1h", job={"type": "report"})
    page.open("#/schedules", "schedules")
    page.click_and_wait('#schedule-list tr[data-id="hourly"] td.col-id a', "schedule")
    assert page.text("#schedule-id") == "hourly"
    assert page.text("#schedule-state") == "active"
    assert page.text('#schedule-fields tr[data-field="spec"] td') == "every 1 h"
    sc = schedule(api, "hourly")
    ticks = [li.get_attribute("data-at") for li in page.finds("#next-runs li")]
    assert ticks == sc["next_runs"] and len(ticks) == 5
    assert page.text("#next-runs li").startswith(utc_iso(ticks[0]) + ", in ")
    assert page.row_ids("#last-runs") == [] and page.find("#no-last-runs").is_displayed()

    page.click_and_wait("#btn-trigger", "schedule")
    first = schedule(api, "hourly")["last_runs"][0]["job_id"]
    assert page.row_ids("#last-runs") == [first]
    # A run made behind the page's back shows up by itself, newest first.
    status, out = api.call("POST", "/api/schedules/hourly/trigger")
    assert status == 202, out
    second = out["job_ids"][0]
    poll(lambda: page.row_ids("#last-runs") == [second, first], "the second run, live")
    assert page.refreshes() >= 2

    def statuses_match():
        runs = schedule(api, "hourly")["last_runs"]
        return {r["job_id"]: r["status"] for r in runs} == {
            jid: page.text(f'#last-runs tr[data-id="{jid}"] td.col-status') for jid in
            page.row_ids("#last-runs")}
    poll(statuses_match, "each run's status as the API says")
    page.click_and_wait(f'#last-runs tr[data-id="{first}"] td.col-job a', "job")
    assert page.text("#job-id") == first

    page.open("#/schedule/hourly", "schedule")
    page.click_and_wait("#btn-pause", "schedule")
    assert schedule(api, "hourly")["paused"] is True
    assert page.text("#schedule-state") == "paused"
    assert page.finds("#next-runs li") == [] and page.find("#no-next-runs").is_displayed()
    assert page.finds("#btn-resume") != [] and page.finds("#btn-pause") == []

    before = page.render()
    page.find("#btn-delete").click()
    page.confirm("Delete schedule hourly?", before, "schedules")
    assert api.call("GET", "/api/schedules/hourly")[0] == 404
    assert page.row_ids("#schedule-list") == []
    page.assert_console_clean()


# Markup in job data ########################################################

# No "/" in the id: GET /api/jobs/{id} cannot reach an id with one (%2F is decoded
# before routing), so "</script>" is left out; an unclosed <script> is markup enough.
HOSTILE_ID = '<script>document.title="pwned-id"<img src=x onerror="window.__pwned=1">'
HOSTILE_PAYLOAD = {"html": '<img src=x onerror="window.__pwned=2">',
                   "js": "<script>window.__pwned=3</script>", "close": "</pre><b>bold</b>"}
HOSTILE_ERROR = '<img src=x onerror="window.__pwned=4"><svg onload="window.__pwned=5">'


def test_markup_in_job_data_is_shown_as_text(page, api, node):
    register(api, id=HOSTILE_ID, type="<b>type</b>", payload=HOSTILE_PAYLOAD)
    report(api, HOSTILE_ID, "running", workerId="<i>w</i>")
    report(api, HOSTILE_ID, "failed", workerId="<i>w</i>", errorMessage=HOSTILE_ERROR)

    def nothing_ran(where: str) -> None:
        title, pwned, injected = page.d.execute_script(
            "return [document.title, window.__pwned === undefined ? null : window.__pwned,"
            " document.querySelectorAll('#view script, #view img, #view svg:not(#rates-graph),"
            " #view b, #view i').length];")
        assert title == "dqorch", where
        assert pwned is None, f"{where}: a script ran (window.__pwned={pwned})"
        assert injected == 0, f"{where}: markup from job data became elements"

    page.open("#/job/" + urllib.parse.quote(HOSTILE_ID, safe=""), "job")
    assert page.text("#job-id") == HOSTILE_ID
    assert json.loads(page.text("#job-payload")) == HOSTILE_PAYLOAD
    assert page.text("#job-error") == HOSTILE_ERROR
    assert page.text('#job-fields tr[data-field="type"] td') == "<b>type</b>"
    assert any(HOSTILE_ERROR in (li.get_attribute("textContent") or "")
               for li in page.finds("#job-history li")), "the reason keeps the error as text"
    nothing_ran("job page")

    page.open("#/jobs", "jobs")
    assert page.row_ids("#job-list") == [HOSTILE_ID]
    assert page.text("#job-list tbody td.col-id") == HOSTILE_ID
    nothing_ran("listing")

    page.open("#/failed", "failed")
    assert page.text("#failed-list tbody td.col-error_message") == HOSTILE_ERROR
    nothing_ran("failed page")
    # A CSP violation (blocked inline script) would be a SEVERE entry as well.
    page.assert_console_clean()


# Every page: accessibility, narrow and dark screens, screenshots ###########

PAGES = (("overview", "#/"), ("jobs", "#/jobs"), ("job", "#/job/c-0"),
         ("failed", "#/failed"), ("workers", "#/workers"), ("worker", "#/worker/w-1"),
         ("schedules", "#/schedules"), ("schedule", "#/schedule/nightly"))
SCREENS = ((1280, "light"), (1280, "dark"), (390, "light"), (390, "dark"))
AXE_DIR = os.path.join(tempfile.gettempdir(), "dqorch-axe")
# WCAG 2.1 A and AA: what the console promises; best-practice rules are advice.
AXE_RUN = """
var done = arguments[arguments.length - 1];
axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
  .then(function (r) { done(r.violations.map(function (v) {
      return {id: v.id, impact: v.impact, help: v.help,
              nodes: v.nodes.slice(0, 3).map(function (n) { return n.target.join(' '); })};
    })); })
  .catch(function (e) { done('axe failed: ' + e); });
"""


@pytest.fixture(scope="module")
def axe_js() -> str:
    """axe-core from the npm registry (`npm pack axe-core@4`), cached in AXE_DIR, or the
    file DQ_AXE_JS names. Skips when neither npm nor the file is there."""
    path = os.environ.get("DQ_AXE_JS") or os.path.join(AXE_DIR, "package", "axe.min.js")
    if not os.path.exists(path):
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("axe-core needs npm (apt-get install npm) or DQ_AXE_JS")
        os.makedirs(AXE_DIR, exist_ok=True)
        out = subprocess.run([npm, "pack", "axe-core@4", "--silent"], cwd=AXE_DIR,
                             capture_output=True, text=True, timeout=180)
        if out.returncode != 0:
            pytest.skip("npm pack axe-core failed: " + out.stderr[-400:])
        with tarfile.open(os.path.join(AXE_DIR, out.stdout.split()[-1])) as tgz:
            tgz.extractall(AXE_DIR, filter="data")
    with open(path, encoding="utf-8") as f:
        return f.read()


def serious_violations(page, axe_js: str) -> list:
    """axe-core's WCAG 2.1 AA violations of impact serious or critical on this page."""
    page.d.set_script_timeout(60)
    page.d.execute_script(axe_js)
    found = page.d.execute_async_script(AXE_RUN)
    assert isinstance(found, list), found
    return [v for v in found if v["impact"] in ("serious", "critical")]


def emulate(driver, width: int, scheme: str, height: int = 900) -> None:
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": scheme}]})
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def reset_emulation(driver) -> None:
    """Back to the window's own size and the system's colour scheme."""
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    driver.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})


def full_page_shot(page, name: str, width: int, scheme: str) -> str:
    os.makedirs(SHOTS, exist_ok=True)
    height = page.d.execute_script("return Math.ceil(document.body.getBoundingClientRect().height)")
    emulate(page.d, width, scheme, max(600, min(int(height), 4000)))
    path = os.path.join(SHOTS, name + ".png")
    assert page.d.save_screenshot(path), path
    return path


def test_every_page_passes_axe_fits_390px_and_is_photographed(page, api, node, axe_js):
    mixed_jobs(api)
    failed_job(api, "f-1", "worker lost: heartbeat timeout", type="email")
    register(api, id="a-rather-long-job-id-0123456789-abcdef-0123456789-abcdef")
    # A paused queue, and schedules with a run (one paused), for their pages.
    assert api.call("POST", "/api/queues/job.low/pause")[0] == 200
    put_schedule(api, "nightly", cron="30 2 * * *", timezone="Europe/Rome",
                 job={"type": "report", "priority": "HIGH"})
    assert api.call("POST", "/api/schedules/nightly/trigger")[0] == 202
    put_schedule(api, "poll", every="30s", overlap="allow_all", job={"type": "poll"})
    assert api.call("POST", "/api/schedules/poll/pause")[0] == 200
    try:
        for width, scheme in SCREENS:
            for name, hash_ in PAGES:
                where = f"{name} at {width} px, {scheme}"
                emulate(page.d, width, scheme)
                page.open(hash_, name)
                if name == "overview":      # the graph drawn
                    poll(lambda: page.find("#rates-graph polyline.line-registered")
                         .get_attribute("points"), "the graph")
                assert page.d.execute_script(
                    "return matchMedia('(prefers-color-scheme: dark)').matches") == \
                    (scheme == "dark")
                bad = serious_violations(page, axe_js)
                assert bad == [], f"{where}: " + json.dumps(bad, indent=1)
                # Nothing is cut or pushes the page sideways: wide tables scroll in
                # their own box, and ids stay on one line.
                overflow = page.d.execute_script(
                    "return document.documentElement.scrollWidth - window.innerWidth")
                wide = page.d.execute_script(
                    "return Array.from(document.querySelectorAll('body *')).filter(function (e)"
                    " { return e.getBoundingClientRect().right > window.innerWidth; })"
                    ".slice(0, 8).map(function (e) { return e.tagName + '#' + e.id + '.' +"
                    " e.className + ' ' + Math.round(e.getBoundingClientRect().right); });")
                assert overflow <= 0, f"{where}: the page is {overflow} px too wide: {wide}"
                tall = page.d.execute_script(
                    "return Array.from(document.querySelectorAll('td .id')).filter("
                    "function (e) { return e.getBoundingClientRect().height >"
                    " 2 * parseFloat(getComputedStyle(e).lineHeight || 20); }).length")
                assert tall == 0, f"{where}: {tall} ids wrap over lines"
                errors = page.severe_logs()
                assert errors == [], f"{where}: " + "\n".join(e["message"] for e in errors)
                # 1280 px light under the plain names the README shows
                shot = name if (width, scheme) == (1280, "light") else f"{name}-{width}-{scheme}"
                path = full_page_shot(page, shot, width, scheme)
                assert os.path.getsize(path) > 5_000, f"{path} looks empty"
    finally:
        reset_emulation(page.d)


# Token #####################################################################

def test_a_401_asks_for_a_token_and_then_the_console_works(driver, make_node, clean_queues,
                                                           axe_js):
    node = make_node(api_tokens=[TOKEN], start=False).start(wait=False)
    c = node.client()
    auth = {"Authorization": f"Bearer {TOKEN}"}

    def up():
        try:
            return c.call("GET", "/api/health", headers=auth)[0] == 200
        except OSError:
            return False
    wait_until(up, 60, 0.1, "node up\n" + node.log_tail())
    assert c.call("GET", "/api/metrics")[0] == 401, "the API itself needs the token"

    p = Page(driver, node.http_port)
    p.open("#/", "overview", ready=False)
    poll(lambda: p.find("#token-form").is_displayed(), "the token form after a 401")
    # A login card, not an error over an empty dashboard.
    assert not p.find("#view").is_displayed() and not p.find("#error").is_displayed()
    assert p.find("#view").get_attribute("data-state") == "login"
    assert serious_violations(p, axe_js) == []
    try:
        assert full_page_shot(p, "login", 1280, "light")
    finally:
        reset_emulation(driver)
    p.find("#token-input").send_keys(TOKEN)
    p.click_and_wait("#token-form button[type=submit]", "overview")
    assert not p.find("#token-form").is_displayed()
    assert p.text("#raft-role") == "leader"
    assert p.d.execute_script("return sessionStorage.getItem('dqorch.token')") == TOKEN

    # A new load takes the token from sessionStorage, and writes carry it too.
    status, _ = c.call("POST", "/api/jobs/register", {"id": "t-1"}, headers=auth)
    assert status == 202
    p.open("#/job/t-1", "job")
    p.click_and_wait("#btn-cancel", "job")
    wait_until(lambda: c.call("GET", "/api/jobs/t-1", headers=auth)[1]["status"] == "cancelled",
               20, 0.05, "t-1 cancelled with the token")
    p.d.execute_script("sessionStorage.clear()")
    c.close()


# Live pages ################################################################

def test_the_listing_updates_live_and_keeps_filters_selection_and_scroll(page, api, node):
    for i in range(40):
        register(api, id=f"live-{i:02d}", type="live")
    page.open("#/jobs?type=live&limit=50", "jobs")
    assert len(page.row_ids("#job-list")) == 40
    # What a person has done on the page: typed a filter (not applied yet), selected a
    # job, scrolled down.
    page.find("#filter-error").send_keys("half-typed")
    page.find('#job-list tr[data-id="live-03"] input.select-row').click()
    page.d.set_window_size(1280, 500)
    try:
        page.d.execute_script("window.scrollTo(0, 400)")
        scrolled = page.d.execute_script("return window.scrollY")
        assert scrolled > 0
        render = page.render()
        register(api, id="live-new", type="live")
        report(api, "live-10", "running")
        poll(lambda: page.row_ids("#job-list")[0] == "live-new",
             "the new job appears without a reload")
        poll(lambda: page.text('#job-list tr[data-id="live-10"] td.col-status') == "running",
             "a changed job shows its new status")
        assert page.render() == render, "updated in place, not re-rendered"
        assert page.find("#filter-error").get_attribute("value") == "half-typed"
        assert page.find('#job-list tr[data-id="live-03"] input.select-row').is_selected()
        assert page.text("#selected-count") == "1 job selected"
        assert page.d.execute_script("return window.scrollY") == scrolled
    finally:
        page.d.set_window_size(1280, 900)
    page.assert_console_clean()


def test_every_page_refreshes_by_itself(page, api, node):
    failed_job(api, "f-live", "first error")
    failed_job(api, "f-gone", "second error")

    def beat():
        assert api.call("POST", "/api/workers/heartbeat",
                        {"workerId": "w-live", "capacity": 2})[0] == 200

    beat()
    page.open("#/failed", "failed")
    assert api.call("POST", "/api/jobs/f-gone/retry")[0] == 202
    poll(lambda: page.row_ids("#failed-list") == ["f-live"], "failed: f-gone left")

    page.open("#/job/f-live", "job")
    assert api.call("POST", "/api/jobs/f-live/retry")[0] == 202
    poll(lambda: page.text("#job-status") in ("pending", "queued"), "job: retried")

    page.open("#/workers", "workers")
    beat()
    poll(lambda: page.text('#worker-list tr[data-id="w-live"] td.col-heartbeats') == "2",
         "workers: the second heartbeat counted")

    page.open("#/worker/w-live", "worker")
    beat()
    poll(lambda: page.text('#worker-fields tr[data-field="heartbeats"] td') == "3",
         "worker: the third heartbeat counted")
    assert page.refreshes() >= 2
    page.assert_console_clean()


# Finding jobs ##############################################################

def test_search_by_id_prefix_and_by_error_and_time(page, api, node):
    for i in range(3):
        register(api, id=f"order-{i}", type="shop")
    register(api, id="other-1", type="shop")
    failed_job(api, "order-bad", "Card declined by the bank", type="shop")
    page.open("#/jobs", "jobs")
    page.find("#search-id").send_keys("order-")
    page.click_and_wait("#search-form button[type=submit]", "jobs")
    assert "id_prefix=order-" in page.d.current_url
    want = [j["id"] for j in api.call("GET", "/api/jobs?id_prefix=order-")[1]["jobs"]]
    assert page.row_ids("#job-list") == want == ["order-bad", "order-2", "order-1", "order-0"]

    page.find("#filter-error").send_keys("DECLINED")
    page.click_and_wait("#filter-form button[type=submit]", "jobs")
    assert page.row_ids("#job-list") == ["order-bad"]

    # A created range that ends before any of them: nothing.
    page.open("#/jobs?created_before=1000", "jobs")
    assert page.row_ids("#job-list") == [] and page.text("#job-count").startswith("0 matching")
    page.assert_console_clean()


# Bulk actions and the dead set #############################################

def test_selected_jobs_are_cancelled_after_a_confirmation_with_the_count(page, api, node):
    for i in range(4):
        register(api, id=f"sel-{i}", type="sel")
    page.open("#/jobs?type=sel", "jobs")
    assert page.find("#btn-bulk-cancel").get_attribute("disabled") is not None
    for jid in ("sel-1", "sel-3"):
        page.find(f'#job-list tr[data-id="{jid}"] input.select-row').click()
    assert page.text("#selected-count") == "2 jobs selected"
    before = page.render()
    page.find("#btn-bulk-cancel").click()
    page.confirm("Cancel 2 jobs?", before, "jobs")
    assert {j: job(api, j)["status"] == "cancelled" for j in ("sel-0", "sel-1", "sel-2", "sel-3")} \
        == {"sel-0": False, "sel-1": True, "sel-2": False, "sel-3": True}
    assert "Cancelled 2 jobs" in page.text("#notice")
    page.assert_console_clean()


def test_a_declined_confirmation_changes_nothing(page, api, node):
    failed_job(api, "keep-1", "e")
    page.open("#/job/keep-1", "job")
    page.find("#btn-discard").click()
    poll(lambda: page.find("#confirm").get_attribute("open") is not None, "the question")
    page.find("#confirm-cancel").click()
    assert job(api, "keep-1")["status"] == "failed"
    page.assert_console_clean()


def test_discard_from_the_job_page_forgets_the_job(page, api, node):
    failed_job(api, "dead-1", "e")
    page.open("#/job/dead-1", "job")
    before = page.render()
    page.find("#btn-discard").click()
    page.confirm("Discard job dead-1?", before, "jobs")
    assert api.call("GET", "/api/jobs/dead-1")[0] == 404
    page.assert_console_clean()


def test_retry_all_failed_retries_every_failed_job_not_a_hundred(page, api, node):
    items = [{"id": f"many-{i}", "type": "many"} for i in range(130)]
    status, out = api.call("POST", "/api/jobs/batch", {"jobs": items})
    assert status == 202 and out["accepted"] == 130
    for it in items:
        report(api, it["id"], "failed", errorMessage="bulk")
    register(api, id="stopped-on-purpose")
    assert api.call("POST", "/api/jobs/stopped-on-purpose/cancel")[0] == 200
    page.open("#/failed", "failed")
    assert page.text("#failed-count").startswith("130 failed")
    before = page.render()
    page.find("#btn-retry-all").click()
    page.confirm("Retry all 130 failed jobs?", before, "failed")
    assert api.call("GET", "/api/jobs?status=failed")[1]["count"] == 0
    assert "Retried 130 jobs" in page.text("#notice")
    assert job(api, "stopped-on-purpose")["status"] == "cancelled", "cancelled stay cancelled"
    page.assert_console_clean()


# Workers ###################################################################

def test_worker_page_shows_stats_load_and_running_jobs(page, api, node):
    for load in (1, 2):
        code, _ = api.call("POST", "/api/workers/heartbeat", {
            "workerId": "w-9", "workerType": "python", "capacity": 4, "currentLoad": load,
            "jobsProcessed": 1234, "jobsSucceeded": 1200, "jobsFailed": 34})
        assert code == 200
    register(api, id="on-w9")
    report(api, "on-w9", "running", workerId="w-9")
    page.open("#/worker/w-9", "worker")
    assert page.text("#worker-status") == "active"
    assert page.text('#worker-stats tr[data-stat="jobsProcessed"] td') == "1,234"
    assert "processed" in page.text('#worker-stats tr[data-stat="jobsProcessed"] th')
    assert page.row_ids("#job-list") == ["on-w9"]
    assert len(page.find("#load-graph polyline.line-load").get_attribute("points").split()) == 2
    # It said 2 busy slots; the node records 1 job there: the page says both, and why.
    assert "said load 2 of 4, but the node records 1 job" in page.text("#load-note")
    assert page.finds("#btn-forget") == [] or not page.find("#btn-forget").is_displayed()
    page.assert_console_clean()


def test_a_worker_that_said_goodbye_reads_stopped_and_can_be_forgotten(driver, make_node,
                                                                      clean_queues):
    node = make_node(job_max_retries=0, worker_heartbeat_timeout_s=1).wait_healthy()
    c = node.client()
    try:
        for wid, load in (("bye", 0), ("lost", 1)):
            assert c.call("POST", "/api/workers/heartbeat",
                          {"workerId": wid, "capacity": 2, "currentLoad": load})[0] == 200
        wait_until(lambda: {w["worker_id"]: w["status"] for w in
                            c.call("GET", "/api/workers")[1]["workers"]}
                   == {"bye": "stopped", "lost": "unresponsive"}, 20, 0.1, "both silent")
        p = Page(driver, node.http_port)
        p.open("#/workers", "workers")
        assert p.text('#worker-list tr[data-id="bye"] td.col-status') == "stopped"
        assert p.text('#worker-list tr[data-id="lost"] td.col-status') == "unresponsive"
        assert c.call("GET", "/api/metrics")[1]["workers"] == \
            {"total": 2, "active": 0, "unresponsive": 1, "stopped": 1}
        p.open("#/worker/bye", "worker")
        before = p.render()
        p.find("#btn-forget").click()
        p.confirm("Forget worker bye?", before, "workers")
        assert p.row_ids("#worker-list") == ["lost"]
        assert c.call("GET", "/api/workers/bye")[0] == 404
        p.assert_console_clean()
    finally:
        c.close()
