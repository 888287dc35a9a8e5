/* dqorch web console: one page, no build step, no framework, nothing from outside.
 *
 * Rules this file keeps:
 * - The page is served with a strict Content-Security-Policy (no inline script or
 *   style), so styling is done with classes and the `hidden` attribute, never style="".
 * - Every value from the API goes into the page through textContent or an attribute
 *   set with setAttribute; innerHTML is never used. Job ids, types, payloads and error
 *   messages come from clients and may contain markup.
 * - It only reads the JSON API (docs/API.md) and writes through its documented routes.
 * - Every page is live: it polls the API every 3 s and changes only what changed, so a
 *   person's scroll position, filters, selection and focus stay where they were.
 *
 * Routes (location.hash):
 *   #/                       overview
 *   #/jobs?status=&type=&queue=&worker_id=&id_prefix=&error=&created_since=
 *         &created_before=&finished_since=&finished_before=&retry_count_min=&limit=&offset=
 *                            the listing (times in ms, as the API takes them)
 *   #/job/<encoded id>       one job
 *   #/failed                 failed jobs: retry or discard some or all
 *   #/workers                the workers table
 *   #/worker/<encoded id>    one worker
 *   #/schedules              the schedules: pause, resume, trigger, delete
 *   #/schedule/<encoded id>  one schedule, its next and last runs
 *
 * Stable hooks for tests and for people writing their own checks:
 *   body[data-page]          overview | jobs | job | failed | workers | worker |
 *                            schedules | schedule
 *   #view[data-state]        loading | ready | error | login; ready once the data is shown
 *   #view[data-render]       counts renders (navigations, reloads after an action), so a
 *                            test can wait for the render after the one it saw
 *   #view[data-refreshes]    how many loads of the page's data have been shown (1 at ready)
 *   #error, #notice          last failure (the API's message) / last success message
 *   #token-form, #token-input   the login card, shown after any 401 (sessionStorage)
 *   #search-form, #search-id    open a job by id, or list the jobs whose id begins so
 *   #confirm (dialog), #confirm-text, #confirm-ok, #confirm-cancel: destructive actions
 *   overview: #count-<status>, #queue-table tr[data-queue][data-paused] (td[data-status],
 *             td.col-paused, td.col-ready, td.col-consumers or td.col-rabbitmq-error,
 *             button.btn-pause-queue or button.btn-resume-queue), #queue-help,
 *             #workers-total, #workers-active, #workers-unresponsive, #workers-stopped,
 *             #broker-state, #raft-role, #raft-term, #raft-leader,
 *             #members tr[data-node][data-member] (only with more than one member),
 *             #rates-graph (svg) polyline.line-<series>, #rate-total-<series>
 *   listings (jobs, failed, a worker's running jobs): #filter-form with #filter-status
 *             #filter-type #filter-queue #filter-worker #filter-id-prefix #filter-error
 *             #filter-created-since #filter-created-before #filter-finished-since
 *             #filter-finished-before #filter-retries-min #filter-limit;
 *             #job-count, #job-list tr[data-id] (td.col-<field>, input.select-row),
 *             #select-page, #select-matching, #selected-count, #btn-bulk-cancel,
 *             #btn-bulk-retry, #btn-bulk-discard; #btn-first #btn-prev #btn-next
 *             #btn-last, #page-of
 *   job:      #job-id, #job-status, #job-why, #job-fields tr[data-field] td (run_at,
 *             depends_on: a link per parent, on_parent_failure when the job has them),
 *             #job-attempts tr[data-attempt], #job-payload, #job-result, #job-error (pre;
 *             absent when empty), #job-history li (span.at .status .by .reason .took),
 *             #btn-cancel, #btn-retry, #btn-discard, #btn-reload
 *   failed:   #failed-count, #failed-list tr[data-id] (td.col-error_message,
 *             button.btn-retry-one), #btn-retry-all, #btn-discard-all
 *   workers:  #worker-count, #worker-list tr[data-id] (td.col-<field>)
 *   worker:   #worker-id, #worker-status, #worker-fields tr[data-field] td,
 *             #worker-stats tr[data-stat], #load-graph, #load-note, #btn-forget
 *   schedules: #schedule-count, #schedule-list tr[data-id] (td.col-<id|spec|overlap|
 *             state|next|fired|skipped|last>, .spec .zone in col-spec, .at .when in
 *             col-next, a link to the job in col-last; button.btn-pause-schedule,
 *             .btn-resume-schedule, .btn-trigger-schedule, .btn-delete-schedule)
 *   schedule: #schedule-id, #schedule-state, #schedule-fields tr[data-field] td,
 *             #next-runs li[data-at], #no-next-runs, #last-runs tr[data-id]
 *             (td.col-scheduled_for, td.col-job, td.col-status), #no-last-runs,
 *             #btn-pause or #btn-resume, #btn-trigger, #btn-delete
 */
"use strict";

const STATUSES = ["waiting", "scheduled", "pending", "queued", "running", "completed", "failed", "cancelled"];
const TERMINAL = ["completed", "failed", "cancelled"];
const RETRYABLE = ["failed", "cancelled"];
const LIVE = ["waiting", "scheduled", "pending", "queued", "running"];
const QUEUES = ["job.high", "job.medium", "job.low"];
const SERIES = ["registered", "completed", "failed"];
const PAGE_SIZES = [20, 50, 100, 200];
const REFRESH_MS = 3000;
const TOKEN_KEY = "dqorch.token";

const view = document.getElementById("view");

// Helpers ###################################################################

/* el("td", {class: "x", "data-id": id}, "text", childNode, ...): text children become
 * text nodes, so nothing passed here is ever parsed as markup. */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

const SVG_NS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, textContent) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (textContent !== undefined) node.textContent = textContent;
  return node;
}

const NUMBER = new Intl.NumberFormat("en-US");

/* 12,345: thousands separators everywhere a count is shown. */
function fmtNum(n) {
  return typeof n === "number" ? NUMBER.format(n) : (n === null || n === undefined ? "—" : String(n));
}

function text(id, value) {
  const node = document.getElementById(id);
  if (node) node.textContent = value === null || value === undefined ? "—" : String(value);
}

/* "2026-12-01 16:31:52 UTC": UTC like the `why` lines the node writes. */
function fmtTime(ms) {
  if (ms === null || ms === undefined) return "—";
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

/* "16:31:52.207": the history's order within a second. */
function fmtClock(ms) {
  return new Date(ms).toISOString().slice(11, 23);
}

/* 0.042 s, 3.4 s, 2 min 5 s, 3 h 2 min */
function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "—";
  if (ms < 1000) return (ms / 1000).toFixed(3) + " s";
  const s = ms / 1000;
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + Math.round(s % 60) + " s";
  return Math.floor(s / 3600) + " h " + Math.round((s % 3600) / 60) + " min";
}

function fmtAgo(ms) {
  if (ms === null || ms === undefined) return "—";
  return fmtDuration(Math.max(0, Date.now() - ms)).replace(/\.\d+ s$/, " s") + " ago";
}

/* One wording for the retry counter on every page, the node's own (its history and
 * `why` lines say "retry 1 of 3"). */
function fmtRetries(job) {
  return "retry " + job.retry_count + " of " + job.max_retries;
}

function jobLink(id) {
  return el("a", {href: "#/job/" + encodeURIComponent(id), class: "id"}, id);
}

function workerLink(id) {
  return id ? el("a", {href: "#/worker/" + encodeURIComponent(id), class: "id"}, id) : "—";
}

function statusBadge(status, id) {
  return el("span", {class: "status status-" + status, id: id}, status);
}

/* A table inside a box that scrolls sideways on a narrow screen, instead of being cut. */
function table(id, columns, caption) {
  const head = el("tr", {}, ...columns.map((c) =>
    c instanceof Node ? el("th", {scope: "col"}, c) : el("th", {scope: "col"}, c)));
  const t = el("table", {id: id}, caption ? el("caption", {class: "sr-only"}, caption) : null,
               el("thead", {}, head), el("tbody"));
  return scrollBox(t, caption || id);
}

/* A box that scrolls sideways; focusable, so a keyboard can scroll it too (WCAG 2.1.1). */
function scrollBox(child, label) {
  return el("div", {class: "table-wrap", tabindex: 0, role: "region", "aria-label": label}, child);
}

const FOCUSABLE = "a[href], button, input, select";

/* Put `items` into tbody as rows, keyed by key(item): a row whose item did not change
 * is kept as it is (its focus, its checkbox), changed ones are rebuilt, gone ones
 * removed, and the order follows `items`. A rebuilt row gets the focus back on its
 * n-th link or button when the old one had it there: a row's buttons (pause, retry)
 * stay under the keyboard while its counts change. */
function syncRows(tbody, items, key, makeRow) {
  const old = new Map(Array.from(tbody.children).map((tr) => [tr.dataset.key, tr]));
  const focused = document.activeElement;
  const focusRow = focused && focused.closest ? focused.closest("tr") : null;
  const focusAt = focusRow && focusRow.parentNode === tbody
    ? Array.from(focusRow.querySelectorAll(FOCUSABLE)).indexOf(focused) : -1;
  const rows = items.map((item) => {
    const k = key(item);
    const sig = JSON.stringify(item);
    const have = old.get(k);
    if (have && have.dataset.sig === sig) return have;
    const tr = makeRow(item);
    tr.dataset.key = k;
    tr.dataset.sig = sig;
    return tr;
  });
  const same = rows.length === tbody.children.length &&
    rows.every((r, i) => tbody.children[i] === r);
  if (!same) tbody.replaceChildren(...rows);
  if (focusAt >= 0 && !focusRow.isConnected) {
    const twin = rows.find((r) => r.dataset.key === focusRow.dataset.key);
    const target = twin && twin.querySelectorAll(FOCUSABLE)[focusAt];
    if (target) target.focus();
  }
}

function showError(message) {
  const box = document.getElementById("error");
  box.textContent = message;
  box.hidden = !message;
}

function showNotice(message) {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.hidden = !message;
}

function plural(n, word) {
  return fmtNum(n) + " " + word + (n === 1 ? "" : "s");
}

/* A modal question for destructive actions; resolves true for OK. */
function confirmAction(message, okLabel) {
  const dlg = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = message;
  document.getElementById("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    const done = (answer) => {
      dlg.removeEventListener("close", onClose);
      resolve(answer);
    };
    const onClose = () => done(dlg.returnValue === "ok");
    dlg.addEventListener("close", onClose);
    dlg.returnValue = "";
    dlg.showModal();
  });
}

// API #######################################################################

class ApiFailure extends Error {
  constructor(status, body) {
    // The API's own message ("job is already failed") is what a person needs to read.
    super((body && (body.message || body.error)) || ("HTTP " + status));
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const headers = {"Accept": "application/json"};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const init = {method: method, headers: headers, cache: "no-store"};
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiFailure(0, {message: "cannot reach the node: " + e.message});
  }
  let data = null;
  try {
    data = await resp.json();
  } catch (e) {
    data = null;
  }
  if (resp.status === 401) showLogin(token ? "That token was refused." : "");
  if (!resp.ok) throw new ApiFailure(resp.status, data);
  return data;
}

/* The login card: the page behind it is hidden, not shown empty under an error. */
function showLogin(message) {
  const form = document.getElementById("token-form");
  const wasHidden = form.hidden;
  form.hidden = false;
  view.hidden = true;
  showError("");
  document.getElementById("token-message").textContent =
    message || "This node needs an API token (api_tokens or api_read_tokens).";
  if (wasHidden) document.getElementById("token-input").focus();
}

function setupToken() {
  const form = document.getElementById("token-form");
  const forget = document.getElementById("btn-forget-token");
  forget.hidden = !sessionStorage.getItem(TOKEN_KEY);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = document.getElementById("token-input").value.trim();
    if (!value) return;
    // sessionStorage: the token lives as long as this tab, never in a cookie or the URL.
    sessionStorage.setItem(TOKEN_KEY, value);
    document.getElementById("token-input").value = "";
    form.hidden = true;
    view.hidden = false;
    forget.hidden = false;
    route();
  });
  forget.addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    forget.hidden = true;
    route();
  });
}

// Routing ###################################################################

let generation = 0;          // bumped on every navigation; late answers of old pages are dropped
let refreshTimer = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  return {path: path, params: params};
}

const ROUTES = [
  [/^\/?$/, "overview", renderOverview],
  [/^\/jobs$/, "jobs", renderJobs],
  [/^\/job\/(.+)$/, "job", renderJob],
  [/^\/failed$/, "failed", renderFailed],
  [/^\/workers$/, "workers", renderWorkers],
  [/^\/worker\/(.+)$/, "worker", renderWorker],
  [/^\/schedules$/, "schedules", renderSchedules],
  [/^\/schedule\/(.+)$/, "schedule", renderSchedule],
];

function decoded(part) {
  try {
    return decodeURIComponent(part);
  } catch (e) {
    return part;
  }
}

/* A page is render(ctx) -> update: render builds what does not change and returns the
 * function that loads the data and shows it; route() calls it once (the page is ready
 * after it) and then every REFRESH_MS while the page is shown. */
async function route() {
  generation += 1;
  const gen = generation;
  clearTimeout(refreshTimer);
  showError("");
  showNotice("");
  const {path, params} = parseHash();
  let match = null;
  let found = ROUTES.find(([re]) => (match = path.match(re)));
  if (!found) {
    found = ROUTES[0];
    match = [];
  }
  const [, name, render] = found;
  document.body.dataset.page = name;
  for (const a of document.querySelectorAll("#nav a")) {
    const on = a.dataset.route === name;
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  view.dataset.state = "loading";
  view.dataset.render = String(gen);
  view.dataset.refreshes = "0";
  view.replaceChildren();
  const ctx = {alive: () => gen === generation, params: params, match: match,
               reload: route};
  try {
    const update = await render(ctx);
    if (!ctx.alive()) return;
    await update();
    if (!ctx.alive()) return;
    refreshed();
    view.dataset.state = "ready";
    poll(ctx, update);
  } catch (e) {
    if (!ctx.alive()) return;
    if (e.status === 401) {
      view.dataset.state = "login";
      return;
    }
    view.dataset.state = "error";
    showError(e.message);
  }
}

function refreshed() {
  view.dataset.refreshes = String(Number(view.dataset.refreshes || 0) + 1);
}

function poll(ctx, update) {
  refreshTimer = setTimeout(async () => {
    if (!ctx.alive()) return;
    // Nothing to see while the tab is hidden or a question is open: wait.
    if (!document.hidden && !document.getElementById("confirm").open) {
      try {
        await update();
        if (ctx.alive()) {
          refreshed();
          if (view.dataset.state !== "ready") view.dataset.state = "ready";
          const err = document.getElementById("error");
          if (err.dataset.source === "poll") showError("");
        }
      } catch (e) {
        if (ctx.alive() && e.status !== 401) {
          showError("refresh failed: " + e.message);
          document.getElementById("error").dataset.source = "poll";
        }
      }
    }
    if (ctx.alive()) poll(ctx, update);
  }, REFRESH_MS);
}

/* Run an action (a POST or DELETE), then re-render the page as the node now has it;
 * on failure the API's message stays on screen. */
async function act(button, what, fn) {
  if (button) button.disabled = true;
  try {
    const message = await fn();
    await route();
    if (message) showNotice(message);
  } catch (e) {
    showError(what + " failed: " + e.message);
    if (button) button.disabled = false;
  }
}

/* A button that runs an action with act(); when `question` (or the function giving it)
 * yields [text, OK label], it asks first. */
function actionButton(attrs, label, question, fn) {
  const b = el("button", Object.assign({type: "button"}, attrs), label);
  b.addEventListener("click", async () => {
    const q = typeof question === "function" ? question() : question;
    if (q && !await confirmAction(q[0], q[1])) return;
    await act(b, label, fn);
  });
  return b;
}

// Overview ##################################################################

async function renderOverview(ctx) {
  const statusRow = el("tr", {});
  const countRow = el("tr", {});
  for (const s of STATUSES) {
    statusRow.append(el("th", {scope: "col"}, el("a", {href: "#/jobs?status=" + s}, s)));
    countRow.append(el("td", {id: "count-" + s, class: "count"}, "—"));
  }
  const queues = table("queue-table", ["queue", "state", ...STATUSES,
    "RabbitMQ ready", "consumers", el("span", {class: "sr-only"}, "action")],
    "queues: jobs by status, RabbitMQ's counts");
  const members = table("members", ["node", "role", "member", "api", "last contact",
    "match index", "caught up"], "cluster members");
  view.append(
    el("h1", {class: "sr-only"}, "Overview"),
    el("section", {"aria-labelledby": "h-status"},
      el("h2", {id: "h-status"}, "Jobs by status"),
      scrollBox(el("table", {id: "status-table"}, el("thead", {}, statusRow),
                    el("tbody", {}, countRow)), "jobs by status")),
    el("section", {"aria-labelledby": "h-queues"},
      el("h2", {id: "h-queues"}, "Queues"), queues,
      el("p", {id: "queue-help", class: "muted help"}, QUEUE_HELP)),
    el("section", {class: "cards"},
      el("div", {class: "card"}, el("h2", {}, "Workers"),
        el("p", {}, el("span", {id: "workers-active", class: "big"}, "—"), " active, ",
          el("span", {id: "workers-unresponsive", class: "big"}, "—"), " unresponsive, ",
          el("span", {id: "workers-stopped"}, "—"), " stopped, ",
          el("span", {id: "workers-total"}, "—"), " total"),
        el("a", {href: "#/workers"}, "all workers")),
      el("div", {class: "card"}, el("h2", {}, "Broker"),
        el("p", {}, el("span", {id: "broker-state"}, "—"))),
      el("div", {class: "card"}, el("h2", {}, "Raft"),
        el("p", {}, "role ", el("span", {id: "raft-role", class: "big"}, "—"),
          ", term ", el("span", {id: "raft-term"}, "—")),
        el("p", {}, "leader ", el("span", {id: "raft-leader"}, "—")))),
    el("section", {id: "members-section", hidden: true},
      el("h2", {}, "Cluster members"), members),
    el("section", {},
      el("h2", {}, "Jobs per second, last 10 minutes"),
      el("div", {id: "rates"}, rateSvg()),
      el("p", {class: "legend"}, ...SERIES.map((s) => el("span", {class: "key key-" + s},
        s + " ", el("span", {id: "rate-total-" + s}, "—"), " in 10 min  "))),
      el("p", {id: "rates-note", class: "muted", hidden: true})));
  return () => refreshOverview(ctx);
}

/* [value, null] or [null, the failure]: a read the page can show without. */
function optional(promise) {
  return promise.then((v) => [v, null], (e) => [null, e]);
}

async function refreshOverview(ctx) {
  // The reads are independent. Rates and queues are shown on their own, so that a
  // node without /api/rates, or a follower that cannot reach the leader for
  // /api/queues, still shows its counts.
  const [metrics, cluster, [rates, ratesError], [queues, queuesError]] = await Promise.all([
    api("GET", "/api/metrics"), api("GET", "/api/cluster/status"),
    optional(api("GET", "/api/rates")), optional(api("GET", "/api/queues"))]);
  if (!ctx.alive()) return;
  for (const s of STATUSES) text("count-" + s, fmtNum((metrics.jobs || {})[s] || 0));
  showQueues(metrics, queues, queuesError);
  const w = metrics.workers || {};
  text("workers-active", fmtNum(w.active));
  text("workers-unresponsive", fmtNum(w.unresponsive));
  text("workers-stopped", fmtNum(w.stopped || 0));
  text("workers-total", fmtNum(w.total));
  const b = metrics.broker || {};
  const bs = document.getElementById("broker-state");
  bs.className = b.connected ? "ok" : "bad";
  bs.textContent = b.connected ? "connected"
    : "down since " + fmtTime(b.down_since) + (b.error ? " (" + b.error + ")" : "");
  const r = metrics.raft || {};
  text("raft-role", r.role);
  text("raft-term", fmtNum(r.term));
  text("raft-leader", r.leader || cluster.leader || "none");
  // A single node is a cluster of one: no table for it.
  const list = cluster.members || [];
  document.getElementById("members-section").hidden = list.length <= 1;
  syncRows(document.querySelector("#members tbody"), list, (m) => m.node, (m) =>
    el("tr", {"data-node": m.node, "data-member": m.member || ""}, el("td", {}, m.node),
      el("td", {}, m.role || "—"), el("td", {}, m.member || "—"),
      el("td", {}, m.api || "—"),
      el("td", {}, m.last_contact_ms === null ? "never" : fmtNum(m.last_contact_ms) + " ms ago"),
      el("td", {}, m.match_index === null ? "—" : fmtNum(m.match_index)),
      el("td", {}, m.caught_up === true ? "yes" : m.caught_up === false ? "no" : "—")));
  const note = document.getElementById("rates-note");
  if (rates) {
    drawRates(rates);
    note.hidden = true;
  } else {
    note.textContent = "rates unavailable: " + ratesError.message;
    note.hidden = false;
  }
}

const QUEUE_HELP = "Paused, a queue gets nothing more from this node: its jobs stay " +
  "pending until it is resumed. What RabbitMQ already holds is not taken back by a " +
  "pause: workers still get those messages. RabbitMQ ready: the messages it holds for the " +
  "workers; those a worker took and has not acknowledged are not counted (that needs " +
  "RabbitMQ's management plugin).";

/* The queue table: GET /api/queues (state, our counts, RabbitMQ's); without it, our
 * counts from the metrics and the reason in RabbitMQ's columns. */
function showQueues(metrics, queues, queuesError) {
  const known = new Map(((queues || {}).queues || []).map((q) => [q.queue, q]));
  const names = [...QUEUES, ...Object.keys(metrics.queues || {}).filter((q) => !QUEUES.includes(q))];
  const rows = names.map((q) => {
    const got = known.get(q);
    return got ? {q: q, paused: got.paused, paused_at: got.paused_at, counts: got.jobs || {},
                  rabbitmq: got.rabbitmq || {error: "not asked"}}
      : {q: q, paused: null, paused_at: null, counts: (metrics.queues || {})[q] || {},
         rabbitmq: {error: queuesError ? "queues unavailable: " + queuesError.message
                                       : "not a job queue of this node"}};
  });
  syncRows(document.querySelector("#queue-table tbody"), rows, (r) => r.q, (r) => {
    const rabbit = r.rabbitmq.error !== undefined
      ? [el("td", {class: "col-rabbitmq-error bad", colspan: 2}, r.rabbitmq.error)]
      : [el("td", {class: "col-ready"}, fmtNum(r.rabbitmq.messages_ready)),
         el("td", {class: "col-consumers"}, fmtNum(r.rabbitmq.consumers))];
    return el("tr", {"data-queue": r.q, "data-paused": r.paused === null ? null : String(r.paused)},
      el("th", {scope: "row"}, r.q),
      el("td", {class: "col-paused"}, r.paused === null ? "—" : r.paused
        ? stack(statusBadge("paused"), el("span", {class: "muted"}, "since " + fmtTime(r.paused_at)))
        : statusBadge("publishing")),
      ...STATUSES.map((s) => el("td", {"data-status": s}, fmtNum(r.counts[s] || 0))),
      ...rabbit,
      el("td", {class: "col-action"}, r.paused === null ? "" : queueButton(r)));
  });
}

function queueButton(r) {
  const path = "/api/queues/" + encodeURIComponent(r.q);
  if (r.paused) {
    return actionButton({class: "btn-resume-queue btn-retry", "aria-label": "Resume " + r.q},
      "Resume", null, async () => {
        await api("POST", path + "/resume");
        return r.q + " resumed: its pending jobs are published.";
      });
  }
  const ready = r.rabbitmq.messages_ready;
  return actionButton({class: "btn-pause-queue btn-cancel", "aria-label": "Pause " + r.q},
    "Pause", () => ["Pause " + r.q + "? This node publishes nothing more to it; its jobs " +
      "stay pending until it is resumed. What RabbitMQ already holds" +
      (typeof ready === "number" ? " (" + plural(ready, "message") + " ready)" : "") +
      " is not taken back: workers still get it.", "Pause " + r.q], async () => {
      await api("POST", path + "/pause");
      return r.q + " paused.";
    });
}

// Graphs ####################################################################

/* A round number >= v whose half is whole too (2, 4, 6 or 10 times a power of ten, at
 * least 2), so every axis label is a whole number. */
function niceMax(v) {
  if (v <= 2) return 2;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 4, 6, 10]) if (m * p >= v && (m * p) % 2 === 0) return m * p;
  return 10 * p;
}

/* The graph's coordinates are the element's own pixels (the viewBox follows its width),
 * so its text stays 12 px on a phone instead of shrinking with the picture. */
function graphBox(node) {
  const w = Math.max(300, Math.round(node.getBoundingClientRect().width || 1000));
  return {w: w, h: 220, left: 56, right: 12, top: 12, bottom: 24};
}

function rateSvg() {
  const root = svg("svg", {id: "rates-graph", viewBox: "0 0 1000 220", role: "img",
                          "aria-label": "registered, completed and failed jobs per second"});
  root.append(svg("g", {class: "axes"}),
              ...SERIES.map((s) => svg("polyline", {class: "line line-" + s, points: ""})));
  return root;
}

function drawAxes(graph, G, max, unit, xLabels) {
  const pw = G.w - G.left - G.right, ph = G.h - G.top - G.bottom;
  const label = (tx, ty, anchor, str) => svg("text", {x: tx, y: ty, "text-anchor": anchor}, str);
  const hline = (cls, at) =>
    svg("line", {class: cls, x1: G.left, y1: at, x2: G.w - G.right, y2: at});
  graph.querySelector(".axes").replaceChildren(
    hline("grid", G.top), hline("grid", G.top + ph / 2), hline("axis", G.top + ph),
    label(G.left - 6, G.top + 4, "end", fmtNum(max) + unit),
    label(G.left - 6, G.top + ph / 2 + 4, "end", fmtNum(max / 2) + unit),
    label(G.left - 6, G.top + ph + 4, "end", "0"),
    label(G.left, G.h - 6, "start", xLabels[0]),
    label(G.left + pw / 2, G.h - 6, "middle", xLabels[1]),
    label(G.w - G.right, G.h - 6, "end", xLabels[2]));
}

function polyPoints(values, G, max, n) {
  const pw = G.w - G.left - G.right, ph = G.h - G.top - G.bottom;
  const x = (i) => G.left + (n <= 1 ? pw : (i * pw) / (n - 1));
  const y = (v) => G.top + ph - (v / max) * ph;
  return values.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
}

function drawRates(rates) {
  const series = rates.series || {};
  const n = Math.max(1, ...SERIES.map((s) => (series[s] || []).length));
  let top = 1;
  for (const s of SERIES) for (const v of series[s] || []) if (v > top) top = v;
  const max = niceMax(top);
  const graph = document.getElementById("rates-graph");
  const G = graphBox(graph);
  graph.setAttribute("viewBox", `0 0 ${G.w} ${G.h}`);
  for (const s of SERIES) {
    const values = series[s] || [];
    graph.querySelector(".line-" + s).setAttribute("points", polyPoints(values, G, max, n));
    text("rate-total-" + s, fmtNum(values.reduce((a, v) => a + v, 0)));
  }
  const windowMin = Math.round(((rates.window_s || n * (rates.interval_s || 1))) / 60);
  drawAxes(graph, G, max, "/s", ["-" + windowMin + " min", "-" + windowMin / 2 + " min", "now"]);
}

// Listings ##################################################################

/* The filters a listing can carry in its hash: [hash key, element id, label, kind]. */
const FILTERS = [
  ["status", "filter-status", "status", "status"],
  ["type", "filter-type", "type", "text"],
  ["queue", "filter-queue", "queue", "queue"],
  ["worker_id", "filter-worker", "worker", "text"],
  ["id_prefix", "filter-id-prefix", "id begins with", "text"],
  ["error", "filter-error", "error contains", "text"],
  ["created_since", "filter-created-since", "created from", "time"],
  ["created_before", "filter-created-before", "created before", "time"],
  ["finished_since", "filter-finished-since", "finished from", "time"],
  ["finished_before", "filter-finished-before", "finished before", "time"],
  ["retry_count_min", "filter-retries-min", "retries at least", "number"],
];

const MORE_FILTERS = ["created_since", "created_before", "finished_since", "finished_before",
                      "retry_count_min"];

function select(id, values, current, anyLabel) {
  return el("select", {id: id}, anyLabel === null ? null : el("option", {value: ""}, anyLabel || "any"),
    ...values.map((v) => el("option", {value: v, selected: String(v) === String(current)}, v)));
}

/* datetime-local holds local time without a zone; the hash and the API hold ms. */
function toLocalInput(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}

function fromLocalInput(value) {
  return value ? String(new Date(value).getTime()) : "";
}

function filterInput(key, id, label, kind, current) {
  let input;
  if (kind === "status") input = select(id, STATUSES, current);
  else if (kind === "queue") input = select(id, QUEUES, current);
  else if (kind === "time") {
    input = el("input", {id: id, type: "datetime-local", step: 1, value: toLocalInput(current)});
  } else if (kind === "number") {
    input = el("input", {id: id, type: "number", min: 0, max: 1000, value: current, class: "narrow"});
  } else input = el("input", {id: id, value: current, size: 12, autocomplete: "off"});
  return el("label", {class: "filter"}, el("span", {}, label), input);
}

/* A listing of jobs with filters, paging by offset, selection and bulk actions.
 * cfg: {hash: "#/jobs", fixed: {status: "failed"} (filters the page always applies),
 *       actions: the bulk actions offered (cancel, retry, discard; default all three),
 *       columns: [[header, class, fn(job) -> cell]], filters: keys shown,
 *       count: fn(page) -> text, extra: fn(job) -> cell or null (last column)}.
 * Returns {node, update}. */
function jobListing(ctx, cfg) {
  const p = ctx.params;
  const asked = Math.floor(Number(p.get("limit")));
  const size = asked >= 1 && asked <= 10000 ? asked : 50;
  const offset = Math.max(0, Number(p.get("offset")) || 0);
  const selected = new Set();
  let lastPage = null;
  let all = false;                      // "every matching job", not only the selection

  const shown = FILTERS.filter(([key]) => cfg.filters.includes(key));
  // The rarer filters fold away (open when one is set): on a phone the form would
  // otherwise fill the screen.
  const rare = shown.filter(([key]) => MORE_FILTERS.includes(key));
  const more = el("details", {class: "more-filters", open: rare.some(([key]) => p.get(key))},
    el("summary", {}, "more filters"), el("div", {class: "filters"},
      ...rare.map(([key, id, label, kind]) => filterInput(key, id, label, kind, p.get(key) || ""))));
  const form = el("form", {id: "filter-form", class: "filters", role: "search",
                           "aria-label": "filter jobs"},
    ...shown.filter((f) => !rare.includes(f)).map(([key, id, label, kind]) =>
      filterInput(key, id, label, kind, p.get(key) || "")),
    el("label", {class: "filter"}, el("span", {}, "per page"),
      select("filter-limit", PAGE_SIZES.includes(size) ? PAGE_SIZES : [size, ...PAGE_SIZES],
             size, null)),
    el("span", {class: "filter-buttons"},
      el("button", {type: "submit"}, "Filter"), " ",
      el("a", {href: cfg.hash}, "clear")),
    rare.length ? more : null);
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [key, id, , kind] of shown) {
      const raw = document.getElementById(id).value.trim();
      const v = kind === "time" ? fromLocalInput(raw) : raw;
      if (v) q.set(key, v);
    }
    q.set("limit", document.getElementById("filter-limit").value);
    // A new filter starts at the first page.
    const target = cfg.hash + "?" + q.toString();
    if (location.hash === target) ctx.reload();
    else location.hash = target;
  });

  const selectPage = el("input", {type: "checkbox", id: "select-page",
                                  "aria-label": "select every job on this page"});
  const columns = [selectPage, ...cfg.columns.map((c) => c[0])];
  if (cfg.extra) columns.push(el("span", {class: "sr-only"}, "action"));
  const list = table("job-list", columns, "jobs");
  const tbody = list.querySelector("tbody");
  const selCount = el("span", {id: "selected-count", class: "muted", "aria-live": "polite"},
                      "none selected");
  const matching = el("input", {type: "checkbox", id: "select-matching"});
  const matchingLabel = el("label", {hidden: true}, matching, " ",
    el("span", {id: "select-matching-label"}, "every matching job"));
  const bulk = el("div", {class: "bulk", role: "group", "aria-label": "actions on the selection"},
    selCount, matchingLabel);
  const buttons = {};
  for (const [name, label, allowed] of [["cancel", "Cancel", LIVE],
                                         ["retry", "Retry", RETRYABLE],
                                         ["discard", "Discard", TERMINAL]]) {
    if (cfg.actions && !cfg.actions.includes(name)) continue;
    const b = el("button", {type: "button", id: "btn-bulk-" + name, class: "btn-" + name,
                            disabled: true}, label + " selected");
    b.addEventListener("click", () => bulkAction(name, label, allowed, b));
    buttons[name] = b;
    bulk.append(" ", b);
  }
  const pager = el("nav", {class: "pager", "aria-label": "pages"});
  const count = el("p", {id: "job-count", class: "muted", "aria-live": "polite"}, "loading…");
  const node = el("div", {class: "listing"}, form, count, bulk, list, pager);

  function apiQuery(extra) {
    const q = new URLSearchParams();
    for (const [key] of FILTERS) if (p.get(key)) q.set(key, p.get(key));
    for (const [k, v] of Object.entries(cfg.fixed || {})) q.set(k, v);
    for (const [k, v] of Object.entries(extra || {})) q.set(k, v);
    return q;
  }

  function filterBody() {
    const body = {};
    for (const [key, v] of apiQuery()) {
      body[key] = /^(created|finished)_|^retry_count/.test(key) ? Number(v) : v;
    }
    return body;
  }

  function refreshSelection() {
    const n = all && lastPage ? lastPage.count : selected.size;
    selCount.textContent = n ? plural(n, "job") + (all ? " (every match)" : "") + " selected"
                             : "none selected";
    for (const b of Object.values(buttons)) b.disabled = n === 0;
    const boxes = Array.from(tbody.querySelectorAll("input.select-row"));
    selectPage.checked = boxes.length > 0 && boxes.every((b) => b.checked);
    matchingLabel.hidden = !(selectPage.checked && lastPage && lastPage.count > boxes.length);
    if (lastPage) text("select-matching-label", "all " + fmtNum(lastPage.count) + " matching jobs");
    if (matchingLabel.hidden && all) {
      all = false;
      matching.checked = false;
      refreshSelection();
    }
  }

  selectPage.addEventListener("change", () => {
    for (const box of tbody.querySelectorAll("input.select-row")) {
      box.checked = selectPage.checked;
      if (box.checked) selected.add(box.dataset.id);
      else selected.delete(box.dataset.id);
    }
    refreshSelection();
  });
  matching.addEventListener("change", () => {
    all = matching.checked;
    refreshSelection();
  });
  tbody.addEventListener("change", (ev) => {
    const box = ev.target;
    if (!box.classList.contains("select-row")) return;
    if (box.checked) selected.add(box.dataset.id);
    else selected.delete(box.dataset.id);
    all = false;
    matching.checked = false;
    refreshSelection();
  });

  async function bulkAction(name, label, allowed, button) {
    const n = all ? lastPage.count : selected.size;
    const body = all ? Object.assign(filterBody(), {all: true}) : {ids: Array.from(selected)};
    if (body.status && !allowed.includes(body.status)) {
      showError(label + ": a " + body.status + " job cannot be " + label.toLowerCase() +
                (name === "cancel" ? "led" : name === "retry" ? "d" : "ed"));
      return;
    }
    // Retrying one job is undone by cancelling it; everything else asks first.
    if (name !== "retry" || n > 1) {
      const question = label + " " + plural(n, "job") + "?" +
        (name === "discard" ? " Discarded jobs are forgotten for good." : "") +
        (name === "cancel" ? " A job a worker already took runs on; its report is ignored." : "") +
        " Jobs in another status are left as they are.";
      if (!await confirmAction(question, label + " " + fmtNum(n))) return;
    }
    await act(button, label, async () => {
      const out = await api("POST", "/api/jobs/" + name, body);
      const done = out.retried ?? out.cancelled ?? out.discarded ?? 0;
      selected.clear();
      return {cancel: "Cancelled ", retry: "Retried ", discard: "Discarded "}[name] +
        plural(done, "job") + ".";
    });
  }

  function pageLink(id, label, off, enabled) {
    if (!enabled) return el("span", {class: "disabled", "aria-disabled": "true"}, label);
    const q = new URLSearchParams(p);
    q.delete("cursor");
    if (off) q.set("offset", String(off));
    else q.delete("offset");
    return el("a", {id: id, href: cfg.hash + "?" + q.toString()}, label);
  }

  async function update() {
    const page = await api("GET", "/api/jobs?" + apiQuery({limit: size, offset: offset}).toString());
    if (!ctx.alive()) return;
    lastPage = page;
    syncRows(tbody, page.jobs, (j) => j.id, (j) => {
      const box = el("input", {type: "checkbox", class: "select-row", "data-id": j.id,
                               "aria-label": "select job " + j.id});
      const tr = el("tr", {"data-id": j.id}, el("td", {class: "col-select"}, box),
        ...cfg.columns.map(([, cls, fn]) => el("td", {class: "col-" + cls}, fn(j))));
      if (cfg.extra) tr.append(el("td", {class: "col-action"}, cfg.extra(j)));
      return tr;
    });
    for (const box of tbody.querySelectorAll("input.select-row")) {
      box.checked = selected.has(box.dataset.id);
    }
    text("job-count", cfg.count(page, offset));
    const pages = Math.max(1, Math.ceil(page.count / size));
    const at = Math.floor(offset / size) + 1;
    const last = (pages - 1) * size;
    pager.replaceChildren(
      pageLink("btn-first", "« First", 0, offset > 0), " ",
      pageLink("btn-prev", "‹ Previous", Math.max(0, offset - size), offset > 0), " ",
      el("span", {id: "page-of"}, "page " + fmtNum(at) + " of " + fmtNum(pages)), " ",
      pageLink("btn-next", "Next ›", offset + size, offset + size < page.count), " ",
      pageLink("btn-last", "Last »", last, offset < last));
    refreshSelection();
  }
  return {node: node, update: update};
}

const JOB_COLUMNS = {
  id: ["id", "id", (j) => jobLink(j.id)],
  type: ["type", "type", (j) => j.type],
  status: ["status", "status", (j) => statusBadge(j.status)],
  queue: ["queue", "queue", (j) => j.queue || "—"],
  priority: ["priority", "priority", (j) => j.priority],
  retries: ["retries", "retry_count", fmtRetries],
  worker: ["worker", "worker_id", (j) => workerLink(j.worker_id)],
  created: ["created", "created_at", (j) => fmtTime(j.created_at)],
  started: ["started", "started_at", (j) => fmtTime(j.started_at)],
  error: ["error", "error_message", (j) => j.error_message || "—"],
  failed: ["failed at", "completed_at", (j) => fmtTime(j.completed_at)],
};

function countText(page, offset, noun) {
  const shown = page.jobs.length;
  return fmtNum(page.count) + " " + noun +
    (shown < page.count ? ", " + (shown ? fmtNum(offset + 1) + "–" + fmtNum(offset + shown)
                                        : "none") + " on this page" : "");
}

async function renderJobs(ctx) {
  const c = JOB_COLUMNS;
  const listing = jobListing(ctx, {
    hash: "#/jobs", filters: FILTERS.map((f) => f[0]),
    columns: [c.id, c.type, c.status, c.queue, c.priority, c.retries, c.worker, c.created],
    count: (page, offset) => countText(page, offset, "matching"),
  });
  view.append(el("h1", {class: "sr-only"}, "Jobs"), listing.node);
  return listing.update;
}

// One job ###################################################################

/* [field, label, how to show it]; the rest of the job is shown apart. */
const JOB_FIELDS = [
  ["type", "Type"], ["priority", "Priority"], ["queue", "Queue"], ["run_at", "Runs at"],
  ["depends_on", "Waits for"], ["on_parent_failure", "If a parent fails"], ["worker_id", "Worker"],
  ["retry_count", "Retries"], ["execution_timeout", "Time limit"], ["progress", "Progress"],
  ["created_at", "Created"], ["queued_at", "Queued"], ["started_at", "Started"],
  ["completed_at", "Finished"], ["client_created_at", "Created (client's clock)"],
  ["metadata", "Metadata"],
];
const TIME_FIELDS = ["run_at", "created_at", "queued_at", "started_at", "completed_at"];
/* on_parent_failure, in words: what a parent that fails or is cancelled does to it. */
const ON_PARENT_FAILURE = {
  cancel: "cancel: a parent that fails or is cancelled cancels this job",
  run: "run: it runs once every parent has ended, however they ended",
};
const SHOWN_APART = ["id", "status", "payload", "result", "error_message", "history", "why",
                     "max_retries"];

function pretty(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

/* History entries are {at, status, by, reason, result?} (result: an earlier attempt's,
 * reported late); a list [at, status, by, reason] is read the same way in case an
 * older node sends that. */
function historyEntries(job) {
  return (job.history || []).map((h) =>
    Array.isArray(h) ? {at: h[0], status: h[1], by: h[2], reason: h[3], result: h[4]} : h);
}

/* Attempts from the history: each entry to pending begins one (a register, a retry);
 * notes about an earlier attempt's late reports are not steps of the current one. For
 * each: how long it waited (pending to running) and ran (running to its end). */
function attemptsOf(entries) {
  const out = [];
  let cur = null;
  for (const h of entries) {
    if (/\blate\b|^ignored/.test(h.reason || "")) continue;
    if (h.status === "pending") {
      if (cur && cur.ended === null) {
        cur.ended = h.at;
        cur.end = "retried";
      }
      cur = {n: out.length + 1, since: h.at, started: null, ended: null, end: null, worker: null};
      out.push(cur);
    } else if (cur && h.status === "running" && cur.started === null) {
      cur.started = h.at;
      cur.worker = h.by;
    } else if (cur && TERMINAL.includes(h.status) && cur.ended === null) {
      cur.ended = h.at;
      cur.end = h.status;
    }
  }
  return out;
}

function historyItem(h, prev) {
  const item = el("li", {"data-status": h.status},
    el("span", {class: "at", title: fmtTime(h.at)}, fmtClock(h.at)), " ",
    el("span", {class: "took"}, prev === null ? "" : "+" + fmtDuration(h.at - prev)), " ",
    statusBadge(h.status), " ",
    el("span", {class: "by"}, h.by ? "by " + h.by : ""), " ",
    el("span", {class: "reason"}, h.reason || ""));
  if (h.result !== undefined) {
    item.append(el("pre", {class: "late-result"}, pretty(h.result)));
  }
  return item;
}

function jobField(job, k) {
  const v = job[k];
  if (k === "worker_id") return workerLink(v);
  if (k === "depends_on" && Array.isArray(v)) {
    const links = el("span", {class: "parents"});
    v.forEach((p, i) => links.append(i ? ", " : "", jobLink(p)));
    return links;
  }
  if (k === "on_parent_failure") return ON_PARENT_FAILURE[v] || String(v);
  if (k === "retry_count") return fmtRetries(job);
  if (k === "execution_timeout") return fmtNum(v) + " s";
  if (k === "progress") return v + " %";
  if (TIME_FIELDS.includes(k)) return el("time", {title: String(v)}, fmtTime(v));
  if (v !== null && typeof v === "object") return el("code", {}, JSON.stringify(v));
  return v === null ? "—" : String(v);
}

async function renderJob(ctx) {
  const id = decoded(ctx.match[1]);
  const path = "/api/jobs/" + encodeURIComponent(id);
  const body = el("div", {id: "job-body"});
  view.append(body);
  let shown = null;
  return async () => {
    const job = await api("GET", path);
    if (!ctx.alive()) return;
    const sig = JSON.stringify(job);
    if (sig === shown) return;       // nothing changed: leave the page (and focus) alone
    shown = sig;
    body.replaceChildren(...jobPage(ctx, job, path));
  };
}

function jobPage(ctx, job, path) {
  const fields = table("job-fields", ["field", "value"], "fields");
  const keys = [...JOB_FIELDS.filter(([k]) => k in job),
                ...Object.keys(job).filter((k) => !JOB_FIELDS.some(([f]) => f === k) &&
                                                  !SHOWN_APART.includes(k)).map((k) => [k, k])];
  fields.querySelector("tbody").append(...keys.map(([k, label]) =>
    el("tr", {"data-field": k}, el("th", {scope: "row"}, label), el("td", {}, jobField(job, k)))));

  const actions = el("p", {class: "actions"});
  if (!TERMINAL.includes(job.status)) {
    actions.append(actionButton({id: "btn-cancel", class: "btn-cancel"}, "Cancel", null,
      async () => {
        await api("POST", path + "/cancel");
        return "Job cancelled.";
      }));
  }
  if (RETRYABLE.includes(job.status)) {
    actions.append(actionButton({id: "btn-retry", class: "btn-retry"}, "Retry", null,
      async () => {
        await api("POST", path + "/retry");
        return "Job retried.";
      }));
  }
  if (TERMINAL.includes(job.status)) {
    actions.append(actionButton({id: "btn-discard", class: "btn-discard"}, "Discard",
      ["Discard job " + job.id + "? It is forgotten for good.", "Discard"], async () => {
        await api("DELETE", path);
        location.hash = "#/jobs";
        return "Job " + job.id + " discarded.";
      }));
  }
  const reload = el("button", {id: "btn-reload", type: "button"}, "Reload");
  reload.addEventListener("click", () => ctx.reload());
  actions.append(reload);

  const entries = historyEntries(job);
  const attempts = attemptsOf(entries);
  const attemptTable = table("job-attempts", ["attempt", "worker", "waited", "ran", "ended"],
                             "attempts");
  attemptTable.querySelector("tbody").append(...attempts.map((a) =>
    el("tr", {"data-attempt": a.n}, el("th", {scope: "row"}, a.n),
      el("td", {}, workerLink(a.worker)),
      el("td", {class: "col-waited"}, fmtDuration((a.started ?? a.ended ?? Date.now()) - a.since)
        + (a.started === null && a.ended === null ? " so far" : "")),
      el("td", {class: "col-ran"}, a.started === null ? "—"
        : fmtDuration((a.ended ?? Date.now()) - a.started) + (a.ended === null ? " so far" : "")),
      el("td", {}, a.end === "retried" ? "failed, retried" : a.end ? statusBadge(a.end) : "—"))));

  const out = [
    el("h1", {}, "Job ", el("span", {id: "job-id", class: "id"}, job.id), " ",
      statusBadge(job.status, "job-status")),
    el("p", {id: "job-why", class: "why"}, job.why || ""),
    actions,
    fields,
  ];
  if (job.error_message) {
    out.push(el("h2", {}, "Error"), el("pre", {id: "job-error"}, job.error_message));
  }
  out.push(el("h2", {}, "Payload"), el("pre", {id: "job-payload"}, pretty(job.payload)));
  if (job.result !== null && job.result !== undefined) {
    out.push(el("h2", {}, "Result"), el("pre", {id: "job-result"}, pretty(job.result)));
  }
  if (attempts.length) {
    out.push(el("h2", {}, "Attempts"), attemptTable);
  }
  out.push(el("h2", {}, "Timeline"),
    el("p", {class: "muted"}, "UTC, to the millisecond; + the time since the entry before."),
    el("ol", {id: "job-history", class: "timeline"},
      ...entries.map((h, i) => historyItem(h, i ? entries[i - 1].at : null))));
  return out;
}

// Failed jobs ###############################################################

async function renderFailed(ctx) {
  const c = JOB_COLUMNS;
  const listing = jobListing(ctx, {
    hash: "#/failed", fixed: {status: "failed"}, actions: ["retry", "discard"],
    filters: ["type", "queue", "worker_id", "id_prefix", "error", "finished_since",
              "finished_before"],
    columns: [c.id, c.type, c.queue, c.retries, c.error, c.failed],
    count: (page, offset) => countText(page, offset, "failed"),
    extra: (j) => {
      return actionButton({class: "btn-retry-one", "aria-label": "retry " + j.id}, "Retry",
        null, async () => {
          await api("POST", "/api/jobs/" + encodeURIComponent(j.id) + "/retry");
          return "Job " + j.id + " retried.";
        });
    },
  });
  // The dead set as a whole. Its count comes from the last load, so the question says
  // how many it is about.
  let count = 0;
  const retryAll = actionButton({id: "btn-retry-all", class: "btn-retry"}, "Retry all failed",
    () => ["Retry all " + plural(count, "failed job") + "?", "Retry " + fmtNum(count)],
    async () => {
      const out = await api("POST", "/api/jobs/retry", {status: "failed", all: true});
      return "Retried " + plural(out.retried, "job") + ".";
    });
  const discardAll = actionButton({id: "btn-discard-all", class: "btn-discard"},
    "Discard all failed",
    () => ["Discard all " + plural(count, "failed job") + "? They are forgotten for good.",
           "Discard " + fmtNum(count)],
    async () => {
      const out = await api("POST", "/api/jobs/discard", {status: "failed", all: true});
      return "Discarded " + plural(out.discarded, "job") + ".";
    });
  view.append(el("h1", {class: "sr-only"}, "Failed jobs"),
    el("p", {class: "actions"}, el("span", {id: "failed-count", class: "muted"}, "loading…"),
      " ", retryAll, " ", discardAll),
    listing.node);
  view.querySelector("#job-list").id = "failed-list";
  return async () => {
    await listing.update();
    const metrics = await api("GET", "/api/metrics");
    if (!ctx.alive()) return;
    count = (metrics.jobs || {}).failed || 0;
    text("failed-count", plural(count, "failed job") + " in all");
    retryAll.disabled = discardAll.disabled = count === 0;
  };
}

// Workers ###################################################################

const WORKER_HELP = "load: what the worker last said (busy slots of its capacity); " +
  "running jobs: what the node records from the workers' reports. They differ while " +
  "reports are on their way, or when a worker counts its slots its own way.";

/* A page that is one table of what GET cfg.path lists: #<noun>-count, a help line and
 * #<noun>-list, whose rows are cfg.row(item) for each of cfg.items(answer), keyed by
 * cfg.key(item). */
function listPage(ctx, cfg) {
  const list = table(cfg.noun + "-list", cfg.columns, cfg.noun + "s");
  view.append(el("h1", {class: "sr-only"}, cfg.title),
    el("p", {id: cfg.noun + "-count", class: "muted"}, "loading…"),
    el("p", {class: "muted help"}, cfg.help), list);
  return async () => {
    const out = await api("GET", cfg.path);
    if (!ctx.alive()) return;
    text(cfg.noun + "-count", plural(out.count, cfg.noun));
    syncRows(list.querySelector("tbody"), cfg.items(out), cfg.key, cfg.row);
  };
}

async function renderWorkers(ctx) {
  return listPage(ctx, {
    noun: "worker", title: "Workers", help: WORKER_HELP, path: "/api/workers",
    columns: ["worker", "type", "status", "load (said)", "running jobs (recorded)",
              "last heartbeat", "first seen", "heartbeats"],
    items: (out) => out.workers, key: (w) => w.worker_id, row: (w) =>
      el("tr", {"data-id": w.worker_id},
        el("td", {class: "col-worker_id"}, workerLink(w.worker_id)),
        el("td", {class: "col-worker_type"}, w.worker_type),
        el("td", {class: "col-status"}, statusBadge(w.status)),
        el("td", {class: "col-load"}, w.current_load + "/" + w.capacity),
        el("td", {class: "col-running_jobs"},
          el("a", {href: "#/jobs?status=running&worker_id=" + encodeURIComponent(w.worker_id)},
            fmtNum(w.running_jobs))),
        el("td", {class: "col-last_heartbeat"},
          el("time", {title: fmtTime(w.last_heartbeat)}, fmtAgo(w.last_heartbeat))),
        el("td", {class: "col-first_seen"}, fmtTime(w.first_seen)),
        el("td", {class: "col-heartbeats"}, fmtNum(w.heartbeats))),
  });
}

/* Stats keys the workers send for their counters (each client names them its own way). */
const STAT_LABELS = [[/processed/i, "processed"], [/succe|complet/i, "succeeded"],
                     [/fail|error/i, "failed"]];

function statLabel(key) {
  const hit = STAT_LABELS.find(([re]) => re.test(key));
  return hit ? hit[1] + " (" + key + ")" : key;
}

async function renderWorker(ctx) {
  const id = decoded(ctx.match[1]);
  const path = "/api/workers/" + encodeURIComponent(id).replace(/%2F/g, "/");
  const fields = table("worker-fields", ["field", "value"], "worker");
  const stats = table("worker-stats", ["counter", "value"], "what the worker reports");
  const noStats = el("p", {id: "worker-no-stats", class: "muted", hidden: true},
                     "It sends no counters with its heartbeats.");
  const graph = svg("svg", {id: "load-graph", viewBox: "0 0 1000 220", role: "img",
                            "aria-label": "reported load over its last heartbeats"});
  graph.append(svg("g", {class: "axes"}), svg("polyline", {class: "line line-capacity", points: ""}),
               svg("polyline", {class: "line line-load", points: ""}));
  const forget = actionButton({id: "btn-forget", class: "btn-discard", hidden: true},
    "Forget this worker", ["Forget worker " + id + "? Its next heartbeat brings it back.",
                           "Forget"], async () => {
      await api("DELETE", path);
      location.hash = "#/workers";
      return "Worker " + id + " forgotten.";
    });
  let current = null;
  const c = JOB_COLUMNS;
  const running = jobListing(ctx, {
    hash: location.hash.split("?")[0], fixed: {status: "running", worker_id: id}, filters: [],
    actions: ["cancel"],
    columns: [c.id, c.type, c.queue, c.retries, c.started],
    count: (page, offset) => countText(page, offset, "running here"),
  });
  view.append(
    el("h1", {}, "Worker ", el("span", {id: "worker-id", class: "id"}, id), " ",
      el("span", {id: "worker-status-slot"})),
    el("p", {class: "actions"}, forget),
    el("p", {id: "load-note", class: "why"}),
    fields,
    el("h2", {}, "Load, last heartbeats"),
    el("div", {id: "load"}, graph),
    el("p", {class: "legend"}, el("span", {class: "key key-load"}, "load said"),
      el("span", {class: "key key-capacity"}, "capacity")),
    el("h2", {}, "Counters it reports"), stats, noStats,
    el("h2", {}, "Running jobs"), running.node);
  return async () => {
    const w = await api("GET", path);
    if (!ctx.alive()) return;
    await running.update();
    if (!ctx.alive()) return;
    current = w;
    document.getElementById("worker-status-slot").replaceChildren(
      statusBadge(w.status, "worker-status"));
    forget.hidden = w.status === "active" || w.running_jobs > 0;
    const note = document.getElementById("load-note");
    note.textContent = w.current_load === w.running_jobs
      ? "It said " + w.current_load + " of " + w.capacity + " slots busy; the node records " +
        plural(w.running_jobs, "job") + " running here."
      : "It said load " + w.current_load + " of " + w.capacity + ", but the node records " +
        plural(w.running_jobs, "job") + " running here: " + WORKER_HELP.split("; ")[1];
    syncRows(fields.querySelector("tbody"), [
      ["worker_type", "Type", w.worker_type],
      ["load", "Load (said)", w.current_load + " of " + w.capacity],
      ["running_jobs", "Running jobs (recorded)", fmtNum(w.running_jobs)],
      ["last_heartbeat", "Last heartbeat", fmtAgo(w.last_heartbeat) + " (" + fmtTime(w.last_heartbeat) + ")"],
      ["first_seen", "First seen", fmtTime(w.first_seen)],
      ["heartbeats", "Heartbeats", fmtNum(w.heartbeats)]], (r) => r[0], (r) =>
      el("tr", {"data-field": r[0]}, el("th", {scope: "row"}, r[1]), el("td", {}, r[2])));
    const keys = Object.keys(w.stats || {}).sort((a, b) =>
      (STAT_LABELS.findIndex(([re]) => re.test(a)) + 1 || 9) -
      (STAT_LABELS.findIndex(([re]) => re.test(b)) + 1 || 9) || a.localeCompare(b));
    syncRows(stats.querySelector("tbody"), keys.map((k) => [k, w.stats[k]]), (r) => r[0], (r) =>
      el("tr", {"data-stat": r[0]}, el("th", {scope: "row"}, statLabel(r[0])),
        el("td", {}, typeof r[1] === "number" ? fmtNum(r[1])
          : typeof r[1] === "object" ? JSON.stringify(r[1]) : String(r[1]))));
    stats.hidden = keys.length === 0;
    noStats.hidden = keys.length > 0;
    drawLoad(graph, current);
  };
}

function drawLoad(graph, w) {
  const heard = w.load_history || [];
  const hist = heard.length === 1 ? [heard[0], heard[0]] : heard;   // one beat: a flat line
  const top = niceMax(Math.max(w.capacity, ...hist.map((p) => p[1])));
  const G = graphBox(graph);
  graph.setAttribute("viewBox", `0 0 ${G.w} ${G.h}`);
  graph.querySelector(".line-load").setAttribute("points",
    polyPoints(hist.map((p) => p[1]), G, top, hist.length));
  graph.querySelector(".line-capacity").setAttribute("points",
    polyPoints(hist.map(() => w.capacity), G, top, hist.length));
  const first = hist.length ? hist[0][0] : Date.now();
  drawAxes(graph, G, top, "", [hist.length ? "-" + fmtDuration(Date.now() - first) : "",
                               "", "now"]);
}

// Schedules #################################################################

const SCHEDULE_HELP = "A schedule registers one job per tick; each run's job id is the " +
  "schedule's id, @ and the tick's time. Make or change one with PUT /api/schedules/{id} " +
  "(curl or dqctl). Paused, it fires nothing; resumed, it fires from the next tick on: " +
  "what fell due while it was paused is not caught up. Trigger now runs it once, now, " +
  "whatever its overlap policy. Times are UTC.";

const OVERLAP = {
  skip: "skip: no run while one of its runs is not finished",
  buffer_one: "buffer_one: one tick waits for the run in progress, the rest are skipped",
  allow_all: "allow_all: runs may overlap",
};

function scheduleLink(id) {
  return el("a", {href: "#/schedule/" + encodeURIComponent(id), class: "id"}, id);
}

function schedulePath(id) {
  return "/api/schedules/" + encodeURIComponent(id);
}

/* "every 30 s", "every 2 h": the API writes `every` in seconds ("7200s"). */
function fmtEvery(every) {
  const s = parseFloat(every);
  if (!(s > 0)) return "every " + every;
  for (const [unit, n] of [["d", 86400], ["h", 3600], ["min", 60]]) {
    if (s >= n && s % n === 0) return "every " + fmtNum(s / n) + " " + unit;
  }
  return "every " + fmtNum(s) + " s";
}

function fmtSpec(sc) {
  return sc.cron !== undefined ? "cron " + sc.cron : fmtEvery(sc.every);
}

/* The time a cron schedule's zone reads at `ms` ("02:30 Europe/Rome"); "" for UTC,
 * for `every`, or a zone this browser does not know. */
function zoned(ms, sc) {
  if (sc.cron === undefined || !sc.timezone || sc.timezone === "UTC") return "";
  try {
    return new Intl.DateTimeFormat("en-GB", {timeZone: sc.timezone, hour: "2-digit",
      minute: "2-digit"}).format(new Date(ms)) + " " + sc.timezone;
  } catch (e) {
    return "";
  }
}

function fmtIn(ms) {
  return ms > Date.now() ? "in " + fmtDuration(ms - Date.now()).replace(/\.\d+ s$/, " s")
                         : fmtAgo(ms);
}

/* A tick as the page shows it: its UTC time, and when it is (the zone's time, how far). */
function tickParts(iso, sc) {
  const ms = Date.parse(iso);
  return {at: fmtTime(ms), when: [zoned(ms, sc), fmtIn(ms)].filter(Boolean).join(", ")};
}

/* Lines in a table cell, one under the other (span.stack > span); null is no line. */
function stack(...lines) {
  return el("span", {class: "stack"}, ...lines.filter((l) => l !== null).map((l) =>
    l instanceof Node ? l : el("span", {}, l)));
}

/* A run in the list: its time linking to its job, and the job's status; or that
 * retention forgot the job. */
function runCell(run) {
  if (!run) return "—";
  const at = fmtTime(Date.parse(run.scheduled_for));
  if (run.status === null) {
    return stack(el("span", {title: run.job_id}, at), el("span", {class: "muted"}, "forgotten"));
  }
  return stack(el("a", {href: "#/job/" + encodeURIComponent(run.job_id), title: run.job_id},
                  at), el("span", {}, statusBadge(run.status)));
}

/* Pause or Resume, Trigger now and Delete for one schedule. On its own page each
 * button has an id and a delete goes back to the list; in the list each has a class
 * and a label that names the schedule. */
function scheduleButtons(sc, onPage) {
  const path = schedulePath(sc.id);
  const attrs = (name, label, look) => onPage ? {id: "btn-" + name, class: look}
    : {class: ["btn-" + name + "-schedule", look].filter(Boolean).join(" "),
       "aria-label": label + " " + sc.id};
  const toggle = sc.paused
    ? actionButton(attrs("resume", "Resume", "btn-retry"), "Resume", null, async () => {
      await api("POST", path + "/resume");
      return "Schedule " + sc.id + " resumed: it fires from its next tick.";
    })
    : actionButton(attrs("pause", "Pause"), "Pause", null, async () => {
      await api("POST", path + "/pause");
      return "Schedule " + sc.id + " paused.";
    });
  const trigger = actionButton(attrs("trigger", "Trigger now"), "Trigger now", null, async () => {
    const out = await api("POST", path + "/trigger");
    return "Schedule " + sc.id + " triggered: " + (out.job_ids || []).join(", ") + ".";
  });
  const del = actionButton(attrs("delete", "Delete", "btn-discard"), "Delete",
    ["Delete schedule " + sc.id + "? It fires no more; the jobs it made stay.", "Delete"],
    async () => {
      await api("DELETE", path);
      if (onPage) location.hash = "#/schedules";
      return "Schedule " + sc.id + " deleted.";
    });
  return el("span", {class: onPage ? "actions" : "row-actions"}, toggle, trigger, del);
}

async function renderSchedules(ctx) {
  return listPage(ctx, {
    noun: "schedule", title: "Schedules", help: SCHEDULE_HELP, path: "/api/schedules",
    columns: ["schedule", "runs", "overlap", "state", "next run", "fired", "skipped",
              "last run", el("span", {class: "sr-only"}, "actions")],
    // `next`: its words change with the clock, so the row is rebuilt when they do.
    items: (out) => out.schedules.map((sc) => Object.assign({}, sc,
      {next: sc.next_runs.length ? tickParts(sc.next_runs[0], sc) : null})),
    key: (sc) => sc.id, row: (sc) =>
      el("tr", {"data-id": sc.id},
        el("td", {class: "col-id"}, scheduleLink(sc.id)),
        el("td", {class: "col-spec"}, stack(el("span", {class: "spec"}, fmtSpec(sc)),
          sc.cron !== undefined ? el("span", {class: "zone muted"}, sc.timezone) : null)),
        el("td", {class: "col-overlap"}, sc.overlap),
        el("td", {class: "col-state"}, statusBadge(sc.paused ? "paused" : "active")),
        el("td", {class: "col-next"}, sc.next === null ? "none while paused"
          : stack(el("span", {class: "at"}, sc.next.at),
                  el("span", {class: "when muted"}, sc.next.when))),
        el("td", {class: "col-fired"}, fmtNum(sc.fired)),
        el("td", {class: "col-skipped"}, stack(fmtNum(sc.skipped_late) + " late",
                                               fmtNum(sc.skipped_overlap) + " overlap")),
        el("td", {class: "col-last"}, runCell(sc.last_runs[0])),
        el("td", {class: "col-action"}, scheduleButtons(sc, false))),
  });
}

async function renderSchedule(ctx) {
  const id = decoded(ctx.match[1]);
  const path = schedulePath(id);
  const fields = table("schedule-fields", ["field", "value"], "schedule");
  const next = el("ol", {id: "next-runs", class: "runs"});
  const noNext = el("p", {id: "no-next-runs", class: "muted", hidden: true},
                    "None while it is paused.");
  const last = table("last-runs", ["scheduled for", "job", "status"], "last runs");
  const noLast = el("p", {id: "no-last-runs", class: "muted", hidden: true}, "None yet.");
  const state = el("span", {id: "schedule-state-slot"});
  const actions = el("p", {class: "actions"});
  view.append(
    el("h1", {}, "Schedule ", el("span", {id: "schedule-id", class: "id"}, id), " ", state),
    actions, fields,
    el("h2", {}, "Next runs"), next, noNext,
    el("h2", {}, "Last runs"), last, noLast,
    el("p", {}, el("a", {href: "#/jobs?id_prefix=" + encodeURIComponent(id + "@")},
                   "all the jobs it made that are still held")));
  let shownState = null;
  return async () => {
    const sc = await api("GET", path);
    if (!ctx.alive()) return;
    // The buttons change only with the paused state: rebuilt then, kept otherwise.
    if (shownState !== sc.paused) {
      shownState = sc.paused;
      state.replaceChildren(statusBadge(sc.paused ? "paused" : "active", "schedule-state"));
      actions.replaceChildren(scheduleButtons(sc, true));
    }
    const rows = [["spec", "Runs", fmtSpec(sc)]];
    if (sc.cron !== undefined) rows.push(["timezone", "Zone", sc.timezone]);
    rows.push(["overlap", "Overlap", OVERLAP[sc.overlap] || sc.overlap],
      ["catchup_window", "Catch-up window", fmtNum(sc.catchup_window) + " s after an outage"],
      ["fired", "Fired", fmtNum(sc.fired)],
      ["skipped_late", "Skipped, late", fmtNum(sc.skipped_late)],
      ["skipped_overlap", "Skipped, overlap", fmtNum(sc.skipped_overlap)]);
    if (sc.buffered) rows.push(["buffered", "Waiting to run", fmtTime(Date.parse(sc.buffered))]);
    rows.push(["job", "Its job", JSON.stringify(sc.job)],
      ["created_at", "Created", fmtTime(sc.created_at)],
      ["updated_at", "Changed", fmtTime(sc.updated_at)]);
    syncRows(fields.querySelector("tbody"), rows, (r) => r[0], (r) =>
      el("tr", {"data-field": r[0]}, el("th", {scope: "row"}, r[1]),
        el("td", {}, r[0] === "job" ? el("code", {}, r[2]) : r[2])));
    next.replaceChildren(...sc.next_runs.map((t) => {
      const tick = tickParts(t, sc);
      return el("li", {"data-at": t}, el("time", {datetime: t}, tick.at), ", " + tick.when);
    }));
    noNext.hidden = sc.next_runs.length > 0;
    syncRows(last.querySelector("tbody"), sc.last_runs, (r) => r.job_id, (r) =>
      el("tr", {"data-id": r.job_id},
        el("td", {class: "col-scheduled_for"}, fmtTime(Date.parse(r.scheduled_for))),
        el("td", {class: "col-job"}, r.status === null ? el("span", {class: "id"}, r.job_id)
                                                       : jobLink(r.job_id)),
        el("td", {class: "col-status"}, r.status === null ? "forgotten" : statusBadge(r.status))));
    last.hidden = sc.last_runs.length === 0;
    noLast.hidden = sc.last_runs.length > 0;
  };
}

// Start #####################################################################

/* The search box: the one job whose id begins so opens; several are listed. */
document.getElementById("search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const id = document.getElementById("search-id").value.trim();
  if (!id) return;
  let target = "#/jobs?id_prefix=" + encodeURIComponent(id);
  try {
    const found = await api("GET", "/api/jobs?limit=1&id_prefix=" + encodeURIComponent(id));
    if (found.count === 1 && found.jobs[0].id === id) target = "#/job/" + encodeURIComponent(id);
  } catch (e) {
    // the listing says what is wrong
  }
  if (location.hash === target) route();      // same hash: no hashchange event, so reload
  else location.hash = target;
});
document.getElementById("confirm-cancel").addEventListener("click", () =>
  document.getElementById("confirm").close(""));
document.getElementById("confirm-ok").addEventListener("click", () =>
  document.getElementById("confirm").close("ok"));
window.addEventListener("hashchange", route);
setupToken();
route();
