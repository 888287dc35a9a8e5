/* dqorch web console: one page, no build step, no framework, nothing from outside.
 *
 * Rules this file keeps:
 * - The page is served with a strict Content-Security-Policy (no inline script or
 *   style), so styling is done with classes and the `hidden` attribute, never style="".
 * - Every value from the API goes into the page through textContent or an attribute
 *   set with setAttribute; innerHTML is never used. Job ids, types, payloads and error
 *   messages come from clients and may contain markup.
 * - It only reads the JSON API (docs/API.md) and writes through its documented routes.
 *
 * Routes (location.hash):
 *   #/                       overview, refreshed every 3 s
 *   #/jobs?status=&type=&queue=&worker_id=&limit=&cursor=   the listing
 *   #/job/<encoded id>       one job
 *   #/failed                 failed jobs, retry one or all
 *   #/workers                the workers table
 *
 * Stable hooks for tests and for people writing their own checks:
 *   body[data-page]          overview | jobs | job | failed | workers
 *   #view[data-state]        loading | ready | error; ready once the page's data is shown
 *   #view[data-render]       counts renders (navigations, reloads after an action), so a
 *                            test can wait for the render after the one it saw
 *   #view[data-refreshes]    overview: how many refreshes have been shown
 *   #error, #notice          last failure (the API's message) / last success message
 *   #token-form, #token-input   shown after any 401; the token is kept in sessionStorage
 *   #search-form, #search-id    open a job by id (every page)
 *   overview: #count-<status> (pending queued running completed failed cancelled),
 *             #queue-table tr[data-queue] td[data-status],
 *             #workers-total, #workers-active, #workers-unresponsive,
 *             #broker-state, #raft-role, #raft-term, #raft-leader,
 *             #members tr[data-node][data-member], #rates-graph (svg) polyline.line-<series>,
 *             #rate-total-<series> (registered completed failed: sum over the window)
 *   jobs:     #filter-form with #filter-status #filter-type #filter-queue #filter-worker,
 *             #job-count, #job-list tr[data-id] (td.col-<field>), #btn-next, #btn-first
 *   job:      #job-id, #job-status, #job-why, #job-fields tr[data-field] td,
 *             #job-payload, #job-result, #job-error (pre), #job-history li
 *             (span.at .status .by .reason), #btn-cancel, #btn-retry, #btn-reload
 *   failed:   #failed-count, #failed-list tr[data-id] (td.col-error_message,
 *             button.btn-retry-one), #btn-retry-all
 *   workers:  #worker-count, #worker-list tr[data-id] (td.col-<field>)
 */
"use strict";

const STATUSES = ["pending", "queued", "running", "completed", "failed", "cancelled"];
const TERMINAL = ["completed", "failed", "cancelled"];
const RETRYABLE = ["failed", "cancelled"];
const QUEUES = ["job.high", "job.medium", "job.low"];
const SERIES = ["registered", "completed", "failed"];
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
function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  return node;
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

function fmtAgo(ms) {
  if (ms === null || ms === undefined) return "—";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 120) return s + " s ago";
  if (s < 7200) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function jobLink(id) {
  return el("a", {href: "#/job/" + encodeURIComponent(id)}, id);
}

function statusBadge(status, id) {
  return el("span", {class: "status status-" + status, id: id}, status);
}

function table(id, columns) {
  const head = el("tr", {}, ...columns.map((c) => el("th", {}, c)));
  return el("table", {id: id}, el("thead", {}, head), el("tbody"));
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
  if (resp.status === 401) showTokenForm(token ? "That token was refused." : "");
  if (!resp.ok) throw new ApiFailure(resp.status, data);
  return data;
}

function showTokenForm(message) {
  const form = document.getElementById("token-form");
  form.hidden = false;
  form.querySelector("p").textContent = message || "This node needs an API token.";
  document.getElementById("token-input").focus();
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
];

async function route() {
  generation += 1;
  const gen = generation;
  clearTimeout(refreshTimer);
  showError("");
  showNotice("");
  const {path, params} = parseHash();
  let match = null;
  let found = ROUTES.find(([re]) => (match = path.match(re)));
  if (!found) found = [null, "overview", renderOverview];
  const [, name, render] = found;
  document.body.dataset.page = name;
  for (const a of document.querySelectorAll("#nav a")) {
    a.classList.toggle("active", a.dataset.route === name);
  }
  view.dataset.state = "loading";
  view.dataset.render = String(gen);
  view.replaceChildren();
  const ctx = {alive: () => gen === generation, params: params, match: match};
  try {
    await render(ctx);
    if (ctx.alive()) view.dataset.state = "ready";
  } catch (e) {
    if (!ctx.alive()) return;
    view.dataset.state = "error";
    showError(e.message);
  }
}

// Overview ##################################################################

async function renderOverview(ctx) {
  const statusRow = el("tr", {});
  const countRow = el("tr", {});
  for (const s of STATUSES) {
    statusRow.append(el("th", {}, el("a", {href: "#/jobs?status=" + s}, s)));
    countRow.append(el("td", {id: "count-" + s, class: "count"}, "—"));
  }
  const queues = table("queue-table", ["queue", ...STATUSES]);
  const members = table("members", ["node", "role", "member", "api", "last contact",
    "match index", "caught up"]);
  view.append(
    el("section", {},
      el("h2", {}, "Jobs by status"),
      el("table", {id: "status-table"}, el("thead", {}, statusRow), el("tbody", {}, countRow))),
    el("section", {}, el("h2", {}, "Jobs by queue"), queues),
    el("section", {class: "cards"},
      el("div", {class: "card"}, el("h2", {}, "Workers"),
        el("p", {}, el("span", {id: "workers-active", class: "big"}, "—"), " active, ",
          el("span", {id: "workers-unresponsive", class: "big"}, "—"), " unresponsive, ",
          el("span", {id: "workers-total"}, "—"), " total"),
        el("a", {href: "#/workers"}, "all workers")),
      el("div", {class: "card"}, el("h2", {}, "Broker"),
        el("p", {}, el("span", {id: "broker-state"}, "—"))),
      el("div", {class: "card"}, el("h2", {}, "Raft"),
        el("p", {}, "role ", el("span", {id: "raft-role", class: "big"}, "—"),
          ", term ", el("span", {id: "raft-term"}, "—")),
        el("p", {}, "leader ", el("span", {id: "raft-leader"}, "—")))),
    el("section", {}, el("h2", {}, "Cluster members"), members),
    el("section", {},
      el("h2", {}, "Jobs per second, last 10 minutes"),
      el("div", {id: "rates"}, rateSvg()),
      el("p", {class: "legend"}, ...SERIES.map((s) => el("span", {class: "key key-" + s},
        s + " ", el("span", {id: "rate-total-" + s}, "—"), " in 10 min  "))),
      el("p", {id: "rates-note", class: "muted", hidden: true})));
  view.dataset.refreshes = "0";
  await refreshOverview(ctx);          // the first load decides ready / error
  scheduleOverview(ctx);
}

function scheduleOverview(ctx) {
  refreshTimer = setTimeout(async () => {
    if (!ctx.alive()) return;
    try {
      await refreshOverview(ctx);
      showError("");
    } catch (e) {
      if (ctx.alive()) showError(e.message);
    }
    if (ctx.alive()) scheduleOverview(ctx);
  }, REFRESH_MS);
}

async function refreshOverview(ctx) {
  // The three reads are independent; rates is drawn on its own so that a node without
  // /api/rates still shows its counts.
  const [metrics, cluster] = await Promise.all([api("GET", "/api/metrics"),
                                                api("GET", "/api/cluster/status")]);
  let rates = null, ratesError = null;
  try {
    rates = await api("GET", "/api/rates");
  } catch (e) {
    ratesError = e;
  }
  if (!ctx.alive()) return;
  for (const s of STATUSES) text("count-" + s, (metrics.jobs || {})[s] || 0);
  const qbody = document.querySelector("#queue-table tbody");
  const extra = Object.keys(metrics.queues || {}).filter((q) => !QUEUES.includes(q));
  const qnames = [...QUEUES, ...extra];
  qbody.replaceChildren(...qnames.map((q) => {
    const counts = (metrics.queues || {})[q] || {};
    return el("tr", {"data-queue": q}, el("th", {}, q),
      ...STATUSES.map((s) => el("td", {"data-status": s}, counts[s] || 0)));
  }));
  const w = metrics.workers || {};
  text("workers-active", w.active);
  text("workers-unresponsive", w.unresponsive);
  text("workers-total", w.total);
  const b = metrics.broker || {};
  const bs = document.getElementById("broker-state");
  bs.className = b.connected ? "ok" : "bad";
  bs.textContent = b.connected ? "connected"
    : "down since " + fmtTime(b.down_since) + (b.error ? " (" + b.error + ")" : "");
  const r = metrics.raft || {};
  text("raft-role", r.role);
  text("raft-term", r.term);
  text("raft-leader", r.leader || cluster.leader || "none");
  document.querySelector("#members tbody").replaceChildren(...(cluster.members || []).map((m) =>
    el("tr", {"data-node": m.node, "data-member": m.member || ""}, el("td", {}, m.node),
      el("td", {}, m.role || "—"), el("td", {}, m.member || "—"),
      el("td", {}, m.api || "—"),
      el("td", {}, m.last_contact_ms === null ? "never" : m.last_contact_ms + " ms ago"),
      el("td", {}, m.match_index === null ? "—" : m.match_index),
      el("td", {}, m.caught_up === true ? "yes" : m.caught_up === false ? "no" : "—"))));
  const note = document.getElementById("rates-note");
  if (rates) {
    drawRates(rates);
    note.hidden = true;
  } else {
    note.textContent = "rates unavailable: " + ratesError.message;
    note.hidden = false;
  }
  view.dataset.refreshes = String(Number(view.dataset.refreshes || 0) + 1);
}

// The graph: a fixed viewBox scaled by CSS; lines are polylines of 600 points.
const G = {w: 1000, h: 220, left: 44, right: 8, top: 10, bottom: 22};

function rateSvg() {
  const root = svg("svg", {id: "rates-graph", viewBox: `0 0 ${G.w} ${G.h}`, role: "img",
                          "aria-label": "registered, completed and failed jobs per second"});
  root.append(svg("g", {class: "axes"}),
              ...SERIES.map((s) => svg("polyline", {class: "line line-" + s, points: ""})));
  return root;
}

function drawRates(rates) {
  const series = rates.series || {};
  const n = Math.max(1, ...SERIES.map((s) => (series[s] || []).length));
  let max = 1;
  for (const s of SERIES) for (const v of series[s] || []) if (v > max) max = v;
  const pw = G.w - G.left - G.right, ph = G.h - G.top - G.bottom;
  const x = (i) => G.left + (n === 1 ? pw : (i * pw) / (n - 1));
  const y = (v) => G.top + ph - (v / max) * ph;
  const graph = document.getElementById("rates-graph");
  for (const s of SERIES) {
    const values = series[s] || [];
    const points = values.map((v, i) => x(i).toFixed(1) + "," + y(v).toFixed(1)).join(" ");
    graph.querySelector(".line-" + s).setAttribute("points", points);
    text("rate-total-" + s, values.reduce((a, v) => a + v, 0));
  }
  const axes = graph.querySelector(".axes");
  const windowMin = Math.round(((rates.window_s || n * (rates.interval_s || 1))) / 60);
  const label = (tx, ty, anchor, str) => {
    const t = svg("text", {x: tx, y: ty, "text-anchor": anchor});
    t.textContent = str;
    return t;
  };
  const hline = (cls, at) =>
    svg("line", {class: cls, x1: G.left, y1: at, x2: G.w - G.right, y2: at});
  axes.replaceChildren(
    hline("grid", G.top), hline("grid", G.top + ph / 2), hline("axis", G.top + ph),
    label(G.left - 4, G.top + 4, "end", max + "/s"),
    label(G.left - 4, G.top + ph / 2 + 4, "end", (max / 2).toFixed(max % 2 ? 1 : 0) + "/s"),
    label(G.left - 4, G.top + ph + 4, "end", "0"),
    label(G.left, G.h - 4, "start", "-" + windowMin + " min"),
    label(G.left + pw / 2, G.h - 4, "middle", "-" + windowMin / 2 + " min"),
    label(G.w - G.right, G.h - 4, "end", "now"));
}

// Jobs listing ##############################################################

const FILTERS = [["status", "filter-status"], ["type", "filter-type"],
                 ["queue", "filter-queue"], ["worker_id", "filter-worker"]];

function select(id, values, current) {
  return el("select", {id: id}, el("option", {value: ""}, "any"),
    ...values.map((v) => el("option", {value: v, selected: v === current}, v)));
}

async function renderJobs(ctx) {
  const p = ctx.params;
  const form = el("form", {id: "filter-form", class: "filters"},
    el("label", {}, "status ", select("filter-status", STATUSES, p.get("status") || "")),
    el("label", {}, "type ",
      el("input", {id: "filter-type", value: p.get("type") || "", size: 12})),
    el("label", {}, "queue ", select("filter-queue", QUEUES, p.get("queue") || "")),
    el("label", {}, "worker ",
      el("input", {id: "filter-worker", value: p.get("worker_id") || "", size: 12})),
    el("button", {type: "submit"}, "Filter"),
    el("a", {href: "#/jobs"}, "clear"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    for (const [key, id] of FILTERS) {
      const v = document.getElementById(id).value.trim();
      if (v) q.set(key, v);
    }
    if (p.get("limit")) q.set("limit", p.get("limit"));
    // A new filter starts at the first page: a cursor belongs to the old filter.
    location.hash = "#/jobs" + (q.toString() ? "?" + q.toString() : "");
  });
  const list = table("job-list", ["id", "type", "status", "queue", "priority", "retries",
                                  "worker", "created"]);
  const pager = el("p", {class: "pager"});
  view.append(form, el("p", {id: "job-count", class: "muted"}, "loading…"), list, pager);

  const q = new URLSearchParams();
  for (const [key] of FILTERS) if (p.get(key)) q.set(key, p.get(key));
  q.set("limit", p.get("limit") || "50");
  if (p.get("cursor")) q.set("cursor", p.get("cursor"));
  const page = await api("GET", "/api/jobs?" + q.toString());
  if (!ctx.alive()) return;
  document.querySelector("#job-list tbody").replaceChildren(...page.jobs.map((j) =>
    el("tr", {"data-id": j.id},
      el("td", {class: "col-id"}, jobLink(j.id)),
      el("td", {class: "col-type"}, j.type),
      el("td", {class: "col-status"}, statusBadge(j.status)),
      el("td", {class: "col-queue"}, j.queue || "—"),
      el("td", {class: "col-priority"}, j.priority),
      el("td", {class: "col-retry_count"}, j.retry_count + "/" + j.max_retries),
      el("td", {class: "col-worker_id"}, j.worker_id || "—"),
      el("td", {class: "col-created_at"}, fmtTime(j.created_at)))));
  text("job-count", page.count + " matching" +
       (page.returned < page.count ? ", " + page.returned + " on this page" : ""));
  if (p.get("cursor")) {
    const first = new URLSearchParams(p);
    first.delete("cursor");
    pager.append(el("a", {id: "btn-first", href: "#/jobs?" + first.toString()}, "First page"), " ");
  }
  if (page.next !== null && page.next !== undefined) {
    const next = new URLSearchParams(p);
    next.set("cursor", page.next);
    pager.append(el("a", {id: "btn-next", href: "#/jobs?" + next.toString()}, "Next page"));
  }
}

// One job ###################################################################

const FIELD_ORDER = ["id", "type", "status", "priority", "queue", "worker_id", "retry_count",
                     "max_retries", "execution_timeout", "progress", "created_at", "queued_at",
                     "started_at", "completed_at", "client_created_at", "metadata"];
const TIME_FIELDS = ["created_at", "queued_at", "started_at", "completed_at"];
const SHOWN_APART = ["payload", "result", "error_message", "history", "why"];

function pretty(value) {
  return JSON.stringify(value === undefined ? null : value, null, 2);
}

/* History entries are {at, status, by, reason, result?} (result: an earlier attempt's,
 * reported late); a list [at, status, by, reason] is read the same way in case an
 * older node sends that. */
function historyItem(h) {
  const [at, status, by, reason, result] =
    Array.isArray(h) ? h : [h.at, h.status, h.by, h.reason, h.result];
  const item = el("li", {"data-status": status},
    el("span", {class: "at"}, fmtTime(at)), " ",
    statusBadge(status), " ",
    el("span", {class: "by"}, by ? "by " + by : ""), " ",
    el("span", {class: "reason"}, reason || ""));
  if (result !== undefined) {
    item.append(el("pre", {class: "late-result"}, pretty(result)));
  }
  return item;
}

async function renderJob(ctx) {
  let id;
  try {
    id = decodeURIComponent(ctx.match[1]);
  } catch (e) {
    id = ctx.match[1];
  }
  const job = await api("GET", "/api/jobs/" + encodeURIComponent(id));
  if (!ctx.alive()) return;
  const fields = table("job-fields", ["field", "value"]);
  const keys = [...FIELD_ORDER.filter((k) => k in job),
                ...Object.keys(job).filter((k) => !FIELD_ORDER.includes(k) &&
                                                  !SHOWN_APART.includes(k))];
  fields.querySelector("tbody").append(...keys.map((k) => {
    const v = job[k];
    let cell;
    if (k === "status") cell = statusBadge(v, "job-status");
    else if (TIME_FIELDS.includes(k)) cell = el("span", {title: v}, fmtTime(v));
    else if (v !== null && typeof v === "object") cell = el("code", {}, JSON.stringify(v));
    else cell = v === null ? "—" : String(v);
    return el("tr", {"data-field": k}, el("th", {}, k), el("td", {}, cell));
  }));

  const actions = el("p", {class: "actions"});
  const base = "/api/jobs/" + encodeURIComponent(id);
  if (!TERMINAL.includes(job.status)) {
    actions.append(actionButton("btn-cancel", "Cancel", base + "/cancel", "cancelled"));
  }
  if (RETRYABLE.includes(job.status)) {
    actions.append(actionButton("btn-retry", "Retry", base + "/retry", "retried"));
  }
  const reload = el("button", {id: "btn-reload", type: "button"}, "Reload");
  reload.addEventListener("click", () => route());
  actions.append(reload);

  view.append(
    el("h2", {}, "Job ", el("span", {id: "job-id"}, job.id)),
    el("p", {id: "job-why", class: "why"}, job.why || ""),
    actions,
    fields,
    el("h3", {}, "Error"), el("pre", {id: "job-error"}, job.error_message ?? "—"),
    el("h3", {}, "Payload"), el("pre", {id: "job-payload"}, pretty(job.payload)),
    el("h3", {}, "Result"), el("pre", {id: "job-result"}, pretty(job.result)),
    el("h3", {}, "History"),
    el("ol", {id: "job-history", class: "timeline"}, ...(job.history || []).map(historyItem)));
}

/* A button that POSTs, then reloads the page so it shows the job as the node now has it;
 * on failure the API's message stays on screen. */
function actionButton(id, label, path, done) {
  const b = el("button", {id: id, type: "button"}, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await api("POST", path);
      await route();
      showNotice("Job " + done + ".");
    } catch (e) {
      showError(label + " failed: " + e.message);
      b.disabled = false;
    }
  });
  return b;
}

// Failed jobs ###############################################################

async function renderFailed(ctx) {
  const all = el("button", {id: "btn-retry-all", type: "button"}, "Retry all failed");
  all.addEventListener("click", async () => {
    all.disabled = true;
    try {
      const out = await api("POST", "/api/jobs/retry", {status: "failed"});
      await route();
      showNotice("Retried " + out.retried + " job" + (out.retried === 1 ? "" : "s") + ".");
    } catch (e) {
      showError("Retry all failed: " + e.message);
      all.disabled = false;
    }
  });
  const list = table("failed-list", ["id", "type", "queue", "attempts", "error", "failed at", ""]);
  view.append(el("p", {class: "actions"},
                 el("span", {id: "failed-count", class: "muted"}, "loading…"), " ", all),
              list);
  const page = await api("GET", "/api/jobs?status=failed&limit=200");
  if (!ctx.alive()) return;
  text("failed-count", page.count + " failed" +
       (page.returned < page.count ? ", the newest " + page.returned + " shown" : ""));
  all.disabled = page.count === 0;
  document.querySelector("#failed-list tbody").replaceChildren(...page.jobs.map((j) => {
    const retry = el("button", {type: "button", class: "btn-retry-one"}, "Retry");
    retry.addEventListener("click", async () => {
      retry.disabled = true;
      try {
        await api("POST", "/api/jobs/" + encodeURIComponent(j.id) + "/retry");
        await route();
        showNotice("Job " + j.id + " retried.");
      } catch (e) {
        showError("Retry failed: " + e.message);
        retry.disabled = false;
      }
    });
    return el("tr", {"data-id": j.id},
      el("td", {class: "col-id"}, jobLink(j.id)),
      el("td", {class: "col-type"}, j.type),
      el("td", {class: "col-queue"}, j.queue || "—"),
      el("td", {class: "col-retry_count"}, (j.retry_count + 1) + "/" + (j.max_retries + 1)),
      el("td", {class: "col-error_message"}, j.error_message || "—"),
      el("td", {class: "col-completed_at"}, fmtTime(j.completed_at)),
      el("td", {}, retry));
  }));
}

// Workers ###################################################################

async function renderWorkers(ctx) {
  const list = table("worker-list", ["worker", "type", "status", "load", "running jobs",
                                     "last heartbeat", "first seen", "heartbeats"]);
  view.append(el("p", {id: "worker-count", class: "muted"}, "loading…"), list);
  const out = await api("GET", "/api/workers");
  if (!ctx.alive()) return;
  text("worker-count", out.count + " worker" + (out.count === 1 ? "" : "s"));
  document.querySelector("#worker-list tbody").replaceChildren(...out.workers.map((w) =>
    el("tr", {"data-id": w.worker_id},
      el("td", {class: "col-worker_id"},
        el("a", {href: "#/jobs?worker_id=" + encodeURIComponent(w.worker_id)}, w.worker_id)),
      el("td", {class: "col-worker_type"}, w.worker_type),
      el("td", {class: "col-status"}, statusBadge(w.status)),
      el("td", {class: "col-load"}, w.current_load + "/" + w.capacity),
      el("td", {class: "col-running_jobs"}, w.running_jobs),
      el("td", {class: "col-last_heartbeat", title: fmtTime(w.last_heartbeat)},
        fmtAgo(w.last_heartbeat)),
      el("td", {class: "col-first_seen"}, fmtTime(w.first_seen)),
      el("td", {class: "col-heartbeats"}, w.heartbeats))));
}

// Start #####################################################################

document.getElementById("search-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const id = document.getElementById("search-id").value.trim();
  if (!id) return;
  const target = "#/job/" + encodeURIComponent(id);
  if (location.hash === target) route();      // same hash: no hashchange event, so reload
  else location.hash = target;
});
window.addEventListener("hashchange", route);
setupToken();
route();
