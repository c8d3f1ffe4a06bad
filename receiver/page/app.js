// Glia's read-only page: plain JavaScript, inline SVG plots, data from the receiver's /api (nothing from elsewhere).
// It runs under a strict Content-Security-Policy (receiver/guard.py): no inline script, no eval, no style attributes.
// The API key (when the receiver has keys) is kept in this browser's localStorage and sent as a bearer token.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { cursor: null, params: null, shown: 0 };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    // the CSSOM, not a style attribute, which the page's Content-Security-Policy (style-src 'self') refuses
    else if (k === "style") node.style.cssText = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  return node;
}

// --- formatting ---------------------------------------------------------------------------------------------------
function bytes(v) {
  if (v === null || v === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v.toFixed(0)} B` : `${v.toFixed(1)} ${units[i]}`;
}
function seconds(v) {
  if (v === null || v === undefined) return "-";
  if (v < 60) return v < 10 ? `${v.toFixed(2)}s` : `${v.toFixed(1)}s`;
  const s = Math.round(v), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m${String(r).padStart(2, "0")}s` : `${m}m${String(r).padStart(2, "0")}s`;
}
const when = (iso) => iso.replace("T", " ").slice(0, 19);

// --- memory: two figures, two names (docs/attributes.md) ----------------------------------------------------------
// What each method means, shown as the figure's tooltip; an unknown method is shown as it is.
const METHODS = {
  "wait4": "the command's ru_maxrss from wait4, forked by glia's spawner: what GNU time's %M reports",
  "wait4-python": "ru_maxrss of a command forked from glia's Python process: starts at glia's size (about 8 MB)",
  "hwm-reset": "the process's VmHWM, reset at the start of the block: its peak during the block",
  "hwm": "the process's VmHWM without a reset: exact only when the block holds the process's peak",
  "sampled": "RSS of the process sampled on a timer (a short spike can be missed)",
  "cgroup": "the peak of memory charged to the command's cgroup: what a memory limit enforces (not RSS)",
  "sampled-tree": "the sum of RSS over the process tree, sampled every 50 ms (a shorter spike can be missed)",
};
const MEMORY_FIGURES = [
  // [field, label, method field]
  ["peak_rss_bytes", "largest process (GNU time %M)", "peak_rss_method"],
  ["tree_peak_bytes", "whole tree", "tree_peak_method"],
];
const oomKilled = (run) => (run.oom_kills ?? 0) > 0;

// --- API ----------------------------------------------------------------------------------------------------------
async function api(path) {
  const headers = {};
  const key = localStorage.getItem("glia-key");
  if (key) headers.Authorization = `Bearer ${key}`;
  const response = await fetch(path, { headers });
  if (response.status === 401 || response.status === 403) {
    const body = await response.json().catch(() => ({}));
    $("#key-form").hidden = false;
    $("#key-message").textContent = body.detail || "an API key is needed";
    throw new Error(body.detail || `HTTP ${response.status}`);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => `${d.loc.at(-1)}: ${d.msg}`).join("; ") : body.detail;
    throw new Error(detail || `HTTP ${response.status}`);
  }
  return response.json();
}

function showError(err) {
  const p = $("#error");
  p.textContent = err ? String(err.message || err) : "";
  p.hidden = !err;
}

// --- runs table ---------------------------------------------------------------------------------------------------
function filterParams() {
  const form = new FormData($("#filters"));
  const params = new URLSearchParams();
  for (const [k, v] of form.entries()) if (String(v).trim()) params.set(k, String(v).trim());
  params.set("limit", "50");
  return params;
}

async function loadRuns(append) {
  showError(null);
  if (!append) { state.params = filterParams(); state.cursor = null; state.shown = 0; }
  const params = new URLSearchParams(state.params);
  if (append && state.cursor) params.set("cursor", state.cursor);
  try {
    const page = await api(`/api/runs?${params}`);
    const body = $("#runs tbody");
    if (!append) body.replaceChildren();
    for (const run of page.runs) body.append(runRow(run));
    state.cursor = page.next_cursor;
    state.shown += page.runs.length;
    $("#more").hidden = !state.cursor;
    $("#count").textContent = `${state.shown} run${state.shown === 1 ? "" : "s"}${state.cursor ? " shown" : ""}`;
  } catch (err) { showError(err); }
}

function runRow(run) {
  return el("tr", { "data-run-id": run.run_id, onclick: () => { location.hash = `run=${run.run_id}`; } },
    el("td", {}, when(run.started_at)),
    el("td", {}, run.program_name ?? run.run_name),
    el("td", {}, run.user_name ?? "-"),
    el("td", {}, run.host_name ?? "-"),
    el("td", { class: `status-${run.status}` }, run.status),
    el("td", { class: "num" }, run.exit_code ?? "-"),
    el("td", { class: "num" }, seconds(run.wall_seconds)),
    el("td", { class: "num" }, run.cpu_percent === null ? "-" : run.cpu_percent.toFixed(0)),
    el("td", { class: "num peak-rss", title: run.peak_rss_method ?? "" }, bytes(run.peak_rss_bytes)),
    el("td", { class: "num tree-peak", title: run.tree_peak_method ?? "" }, bytes(run.tree_peak_bytes),
      oomKilled(run) ? el("span", { class: "oom", title: `oom_kills: ${run.oom_kills}` }, " OOM") : ""));
}

// --- plots --------------------------------------------------------------------------------------------------------
// points: [{x: number, y: number}], drawn as a line (or dots) with min/max labels on both axes.
function plot(title, points, { yFormat = String, xFormat = String, dots = false, bad = () => false } = {}) {
  const W = 460, H = 180, L = 64, R = 10, T = 10, B = 28;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const add = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    svg.append(n);
    return n;
  };
  const wrap = el("div", { class: "plot" }, el("h3", {}, title));
  wrap.append(svg);
  // what was drawn, for tests and for anyone reading the DOM: how many points, and the largest value
  svg.setAttribute("data-points", String(points.length));
  if (!points.length) { add("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data"); return wrap; }
  const xs = points.map((p) => p.x), ys = points.map((p) => p.y);
  svg.setAttribute("data-y-max", String(Math.max(...ys)));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(0, ...ys), Math.max(...ys)];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  add("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B });
  add("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B });
  add("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, yFormat(y1));
  add("text", { x: L - 4, y: H - B, "text-anchor": "end" }, yFormat(y0));
  add("text", { x: L, y: H - 8 }, xFormat(x0));
  add("text", { x: W - R, y: H - 8, "text-anchor": "end" }, xFormat(x1));
  if (dots) {
    points.forEach((p) => add("circle", { class: bad(p) ? "dot bad" : "dot", cx: sx(p.x), cy: sy(p.y), r: 3 }));
  } else {
    add("polyline", { class: "line", points: points.map((p) => `${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(" ") });
    // a few samples (a short run) are marked one by one: a single one would otherwise draw nothing
    if (points.length <= 60) points.forEach((p) => add("circle", { class: "vertex", cx: sx(p.x), cy: sy(p.y), r: 2 }));
  }
  return wrap;
}

// memory: process.memory.usage. CPU: process.cpu.time is cumulative CPU seconds (user and system, glia's points count
// from the run's start, with a zero point there); its sum at each sample time, differenced between consecutive
// samples and divided by the seconds between them, is the CPU use over that interval, drawn at the interval's end
// (100% = one core busy). A fall in the sum (a counter reset, processes that left the tree) draws no point.
function timelines(series, startMs) {
  const at = (p) => (Date.parse(p.time) - startMs) / 1000;
  const memory = series.filter((s) => s.name === "process.memory.usage")
    .flatMap((s) => s.points).filter((p) => p.value !== null).map((p) => ({ x: at(p), y: p.value }))
    .sort((a, b) => a.x - b.x);
  const cpuTotals = new Map();
  for (const s of series.filter((s) => s.name === "process.cpu.time")) {
    for (const p of s.points) if (p.value !== null) cpuTotals.set(at(p), (cpuTotals.get(at(p)) || 0) + p.value);
  }
  const cum = [...cpuTotals.entries()].sort((a, b) => a[0] - b[0]);
  const cpu = [];
  for (let i = 1; i < cum.length; i++) {
    const dt = cum[i][0] - cum[i - 1][0];
    const used = cum[i][1] - cum[i - 1][1];
    if (dt > 0 && used >= 0) cpu.push({ x: cum[i][0], y: (100 * used) / dt });
  }
  return { memory, cpu };
}

// --- one run ------------------------------------------------------------------------------------------------------
async function showRun(id) {
  const box = $("#run-detail");
  $("#program-detail").hidden = true;
  $("#workflow-detail").hidden = true;
  try {
    const [run, metrics] = await Promise.all([api(`/api/runs/${id}`), api(`/api/runs/${id}/metrics`)]);
    const { memory, cpu } = timelines(metrics.series, Date.parse(run.started_at));
    const attrs = el("dl", { class: "attrs" });
    const facts = {
      run_id: run.run_id, program: run.program_name, status: `${run.status}${run.status_message ? ` (${run.status_message})` : ""}`,
      exit_code: run.exit_code, user: run.user_name, host: run.host_name, started_at: when(run.started_at),
      wall: seconds(run.wall_seconds), cpu: `${seconds(run.cpu_seconds)} (${run.cpu_percent?.toFixed(0) ?? "-"} %)`,
    };
    const more = {
      script: run.script_path, script_sha256: run.script_sha256, command: (run.command_args || []).join(" "),
      runtime: run.runtime,
    };
    const addFacts = (o) => {
      for (const [k, v] of Object.entries(o)) if (v !== null && v !== undefined && v !== "") attrs.append(el("dt", {}, k), el("dd", {}, String(v)));
    };
    addFacts(facts);
    attrs.append(...memoryFacts(run));
    addFacts(more);
    for (const [k, v] of Object.entries(run.attributes)) attrs.append(el("dt", {}, k), el("dd", { class: "custom" }, JSON.stringify(v)));
    const plots = el("div", { class: "plots" },
      el("div", { id: "memory-plot" }, plot("memory over time (RSS)", memory, { yFormat: bytes, xFormat: seconds })),
      el("div", { id: "cpu-plot" }, plot("CPU over time (% of one core)", cpu, { yFormat: (v) => `${v.toFixed(0)}%`, xFormat: seconds })));
    const children = run.children.length
      ? el("ul", {}, ...run.children.map((c) => el("li", { style: `margin-left:${(c.depth - 1) * 1.2}em` },
        `${c.name}  ${seconds(c.wall_seconds)}  ${c.status}`)))
      : el("p", {}, "no child spans");
    const programLink = run.program_name
      ? el("a", { href: `#program=${encodeURIComponent(run.program_name)}`, id: "program-link" }, `all runs of ${run.program_name}`)
      : "";
    const workflowId = run.workflow_run_id ?? (run.run_kind === "workflow" ? run.run_id : null);
    const workflowLink = workflowId
      ? el("a", { href: `#workflow=${encodeURIComponent(workflowId)}`, id: "workflow-link" },
        run.run_kind === "workflow" ? "its tasks as a timeline" : `its workflow${run.workflow_name ? ` ${run.workflow_name}` : ""}`)
      : "";
    box.replaceChildren(el("h2", {}, `Run ${run.run_id} — ${run.run_name}`), programLink, workflowId && programLink ? " · " : "",
      workflowLink, attrs,
      memory.length || cpu.length ? plots : el("p", { class: "muted" }, "no samples: the run ended before its first sample (one second in)"),
      el("h3", {}, "Child spans"), children);
    box.hidden = false;
    box.scrollIntoView();
  } catch (err) { showError(err); }
}

// The run's memory figures by name, each with its method; the OOM-kill count when the kernel's OOM killer ended some.
function memoryFacts(run) {
  const out = [];
  for (const [field, label, methodField] of MEMORY_FIGURES) {
    if (run[field] === null || run[field] === undefined) continue;
    const method = run[methodField] ?? "?";
    out.push(el("dt", {}, `${field} `, el("span", { class: "muted" }, label)),
      el("dd", { id: field.replace(/_/g, "-"), title: METHODS[method] ?? "" }, `${bytes(run[field])} (${method})`));
  }
  if (oomKilled(run)) {
    out.push(el("dt", {}, "oom_kills"), el("dd", { id: "oom-kills", class: "bad" },
      `${run.oom_kills} (the kernel's OOM killer ended ${run.oom_kills === 1 ? "a process" : "processes"} of this run)`));
  }
  return out;
}

// --- one program --------------------------------------------------------------------------------------------------
async function showProgram(name) {
  const box = $("#program-detail");
  $("#run-detail").hidden = true;
  $("#workflow-detail").hidden = true;
  try {
    const page = await api(`/api/runs?${new URLSearchParams({ program: name, limit: "500", sort: "-started_at" })}`);
    const runs = page.runs.slice().reverse();
    const day = (r) => Date.parse(r.started_at) / 86400000;
    const dayLabel = (d) => new Date(d * 86400000).toISOString().slice(0, 10);
    const bad = (p) => p.run.status === "error";
    const memory = runs.filter((r) => r.peak_rss_bytes !== null).map((r) => ({ x: day(r), y: r.peak_rss_bytes, run: r }));
    const wall = runs.map((r) => ({ x: day(r), y: r.wall_seconds, run: r }));
    const versions = new Set(runs.map((r) => r.script_sha256).filter(Boolean));
    box.replaceChildren(
      el("h2", {}, `Program ${name}`),
      el("p", {}, `${runs.length} most recent runs${page.next_cursor ? " (older ones not shown)" : ""}, ${versions.size} script version(s); errors in red`),
      el("div", { class: "plots" },
        el("div", { id: "program-memory-plot" }, plot("peak memory per run (largest process)", memory, { yFormat: bytes, xFormat: dayLabel, dots: true, bad })),
        el("div", { id: "program-wall-plot" }, plot("wall time per run", wall, { yFormat: seconds, xFormat: dayLabel, dots: true, bad }))));
    box.hidden = false;
  } catch (err) { showError(err); }
}

// --- one workflow -------------------------------------------------------------------------------------------------
// A workflow's runs come from /api/runs?workflow=ID (its engine's workflow_run_id, or the workflow span's run id),
// in start order, page after page up to WORKFLOW_MAX_RUNS; the workflow span itself (run_kind "workflow") heads the
// view, every other run is a task: one row of the timeline each, a bar from its start to its end.
const WORKFLOW_MAX_RUNS = 5000;

async function showWorkflow(id) {
  const box = $("#workflow-detail");
  $("#run-detail").hidden = true;
  $("#program-detail").hidden = true;
  try {
    const runs = [];
    let cursor = null;
    do {
      const params = new URLSearchParams({ workflow: id, sort: "started_at", limit: "500" });
      if (cursor) params.set("cursor", cursor);
      const page = await api(`/api/runs?${params}`);
      runs.push(...page.runs);
      cursor = page.next_cursor;
    } while (cursor && runs.length < WORKFLOW_MAX_RUNS);
    const workflow = runs.find((r) => r.run_kind === "workflow");
    const tasks = runs.filter((r) => r !== workflow);
    const name = workflow?.workflow_name ?? tasks.find((t) => t.workflow_name)?.workflow_name ?? id;
    const failed = tasks.filter((t) => t.status === "error").length;
    const head = [el("h2", {}, `Workflow ${name}`)];
    const facts = el("dl", { class: "attrs" });
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") facts.append(el("dt", {}, k), el("dd", {}, String(v))); };
    add("workflow_run_id", workflow?.workflow_run_id ?? tasks[0]?.workflow_run_id ?? id);
    add("engine", workflow?.workflow_engine ?? tasks[0]?.workflow_engine);
    if (workflow) {
      add("status", workflow.status);
      add("wall", seconds(workflow.wall_seconds));
      head.push(el("a", { href: `#run=${workflow.run_id}`, id: "workflow-run-link" }, "the workflow's own run"));
    } else {
      head.push(el("p", { class: "muted" }, "the workflow's own span has not arrived: its tasks, grouped by their workflow_run_id"));
    }
    add("tasks", `${tasks.length}${cursor ? ` shown (more not loaded: past ${WORKFLOW_MAX_RUNS})` : ""}, ${failed} failed`);
    box.replaceChildren(...head, facts,
      el("p", { class: "muted" }, "one row per task attempt (#2 a retry), from its start to its end; green ok, red failed,"
        + " grey unset; after each bar its wall time / peak memory (largest process, GNU time %M)"),
      el("div", { id: "workflow-timeline" }, timeline(tasks, workflow)),
      taskTable(tasks));
    box.hidden = false;
    box.scrollIntoView();
  } catch (err) { showError(err); }
}

// One row per task, as Nextflow's timeline report draws them: the task's name on the left, a bar from its start
// to its end on a shared time axis, its wall time and peak memory (the largest process's) after the bar; each row
// links to the task's run. The bar's colour is its status.
function timeline(tasks, workflow) {
  const ROW = 18, L = 280, R = 170, T = 8, B = 28, W = 1100;
  const ns = "http://www.w3.org/2000/svg";
  const H = T + B + ROW * Math.max(tasks.length, 1);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "timeline");
  svg.setAttribute("data-tasks", String(tasks.length));
  const make = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  if (!tasks.length) { svg.append(make("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no tasks")); return svg; }
  const ms = (iso) => Date.parse(iso);
  const starts = tasks.map((t) => ms(t.started_at)), ends = tasks.map((t) => ms(t.ended_at));
  const t0 = Math.min(...starts, workflow ? ms(workflow.started_at) : Infinity);
  let t1 = Math.max(...ends, workflow ? ms(workflow.ended_at) : -Infinity);
  if (t1 <= t0) t1 = t0 + 1000;
  const sx = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R);
  // the time axis: five ticks, seconds from the first start
  svg.append(make("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }));
  for (let i = 0; i <= 4; i++) {
    const x = L + (i / 4) * (W - L - R);
    svg.append(make("line", { class: "grid", x1: x, y1: T, x2: x, y2: H - B }));
    svg.append(make("text", { x, y: H - 10, "text-anchor": "middle" }, seconds(((t1 - t0) / 1000) * (i / 4))));
  }
  tasks.forEach((task, i) => {
    const y = T + i * ROW;
    const x0 = sx(ms(task.started_at)), x1 = Math.max(sx(ms(task.ended_at)), x0 + 1);  // a 0 s task still shows
    const label = `${task.task_name ?? task.run_name}${task.task_attempt > 1 ? ` #${task.task_attempt}` : ""}`;
    const row = make("a", { href: `#run=${task.run_id}`, class: "task", "data-run-id": task.run_id, "data-status": task.status });
    row.append(make("title", {}, `${label}: ${task.status}, ${seconds(task.wall_seconds)}, peak ${bytes(task.peak_rss_bytes)}`));
    row.append(make("text", { class: "label", x: L - 6, y: y + ROW - 5, "text-anchor": "end" },
      label.length > 44 ? `${label.slice(0, 43)}…` : label));
    row.append(make("rect", { class: `bar ${task.status}`, x: x0.toFixed(1), y: y + 3, width: (x1 - x0).toFixed(1), height: ROW - 6 }));
    row.append(make("text", { class: "figures", x: x1 + 4, y: y + ROW - 5 },
      `${seconds(task.wall_seconds)} / ${bytes(task.peak_rss_bytes)}`));
    svg.append(row);
  });
  return svg;
}

function taskTable(tasks) {
  const t0 = Math.min(...tasks.map((t) => Date.parse(t.started_at)));
  return el("table", { id: "workflow-tasks" },
    el("thead", {}, el("tr", {},
      el("th", {}, "Task"), el("th", { class: "num" }, "Attempt"), el("th", {}, "Status"), el("th", { class: "num" }, "Exit"),
      el("th", { class: "num" }, "Start"), el("th", { class: "num" }, "Wall"),
      el("th", { class: "num", title: "peak_rss_bytes: the largest process's peak RSS (GNU time %M)" }, "Peak RSS"),
      el("th", { class: "num", title: "tree_peak_bytes: the task's whole process tree" }, "Tree peak"))),
    el("tbody", {}, ...tasks.map((t) => el("tr", { "data-run-id": t.run_id, onclick: () => { location.hash = `run=${t.run_id}`; } },
      el("td", {}, el("a", { href: `#run=${t.run_id}` }, t.task_name ?? t.run_name)),
      el("td", { class: "num" }, t.task_attempt ?? "-"),
      el("td", { class: `status-${t.status}` }, t.status),
      el("td", { class: "num" }, t.exit_code ?? "-"),
      el("td", { class: "num" }, `+${seconds((Date.parse(t.started_at) - t0) / 1000)}`),
      el("td", { class: "num" }, seconds(t.wall_seconds)),
      el("td", { class: "num" }, bytes(t.peak_rss_bytes)),
      el("td", { class: "num" }, bytes(t.tree_peak_bytes), oomKilled(t) ? el("span", { class: "oom" }, " OOM") : "")))));
}

// --- wiring -------------------------------------------------------------------------------------------------------
function route() {
  const hash = decodeURIComponent(location.hash.slice(1));
  if (hash.startsWith("run=")) showRun(hash.slice(4));
  else if (hash.startsWith("program=")) showProgram(hash.slice(8));
  else if (hash.startsWith("workflow=")) showWorkflow(hash.slice(9));
  else for (const id of ["#run-detail", "#program-detail", "#workflow-detail"]) $(id).hidden = true;
}

$("#filters").addEventListener("submit", (e) => { e.preventDefault(); loadRuns(false); });
$("#more").addEventListener("click", () => loadRuns(true));
$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("glia-key", new FormData(e.target).get("key"));
  $("#key-form").hidden = true;
  loadRuns(false);
  route();
});
window.addEventListener("hashchange", route);
loadRuns(false);
route();
