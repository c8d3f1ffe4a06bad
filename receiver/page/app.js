// Glia's read-only page: plain JavaScript, charts by uPlot (vendor/, served by the receiver), data from the
// receiver's /api (nothing from elsewhere). It runs under a strict Content-Security-Policy (receiver/guard.py): no
// inline script, no eval, no style attributes (styles go through the CSSOM, which the policy allows).
// The API key (when the receiver has keys) is kept in this browser's localStorage and sent as a bearer token.
// The filters live in the query string (?program=align&status=error), the open view in the hash (#run=ID,
// #program=NAME, #workflow=ID), so every view can be bookmarked, shared and reached with Back.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { cursor: null, params: null, shown: 0, search: null };

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
const KiB = 1024, MiB = KiB * 1024, GiB = MiB * 1024;
function bytes(v, digits = 1) {
  if (v === null || v === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return i === 0 ? `${v.toFixed(0)} B` : `${v.toFixed(digits)} ${units[i]}`;
}
// an axis tick: as few digits as the tick needs (256 MiB, 1.5 GiB)
const tickBytes = (v) => bytes(v, Number.isInteger(+bytes(v, 2).split(" ")[0]) ? 0 : 1).replace(/\.0 /, " ");
function seconds(v) {
  if (v === null || v === undefined) return "-";
  if (v < 60) return v < 10 ? `${v.toFixed(2)}s` : `${v.toFixed(1)}s`;
  const s = Math.round(v), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m${String(r).padStart(2, "0")}s` : `${m}m${String(r).padStart(2, "0")}s`;
}
// an axis tick: whole seconds, minutes or hours where the tick is one (90s reads 1m30s)
const tickSeconds = (v) => (v < 60 ? `${+v.toFixed(2)}s` : seconds(v).replace(/m00s$/, "m").replace(/h00m$/, "h"));
const when = (iso) => iso.replace("T", " ").slice(0, 19);
const shortSha = (sha) => (sha ? sha.slice(0, 8) : "no script hash");

// --- statuses: the runs view's one list (docs/querying.md) -------------------------------------------------------
// running (started, not ended), lost (not ended, its heartbeats stopped), error (span status ERROR or a non-zero
// exit code), else ok: the page shows the view's status as it is.

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

// --- filters, kept in the query string ----------------------------------------------------------------------------
const FILTERS = ["name", "program", "user", "host", "status", "since", "attr", "sort"];

function filtersFromForm() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData($("#filters")).entries()) if (String(v).trim()) params.set(k, String(v).trim());
  if (params.get("sort") === "-started_at") params.delete("sort");  // the default: kept out of the URL
  return params;
}

function filtersToForm(params) {
  const form = $("#filters");
  for (const name of FILTERS) {
    const field = form.elements[name];
    if (field) field.value = params.get(name) ?? (name === "sort" ? "-started_at" : "");
  }
}

// Applies the form's filters: into the URL (a new history entry, so Back undoes a filter) and the table.
function applyFilters() {
  const search = filtersFromForm().toString();
  if (search !== location.search.slice(1)) history.pushState(null, "", `${location.pathname}${search ? `?${search}` : ""}${location.hash}`);
  state.search = location.search;
  loadRuns(false);
  loadRunning();
}

// --- runs table ---------------------------------------------------------------------------------------------------
async function loadRuns(append) {
  showError(null);
  if (!append) {
    state.params = new URLSearchParams(location.search);
    state.params.set("limit", "50");
    state.cursor = null;
    state.shown = 0;
  }
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
  const status = run.status;
  const name = run.task_name ?? run.run_name;
  return el("tr", { "data-run-id": run.run_id, "data-status": status, tabindex: "0",
    onclick: (e) => { if (!e.target.closest("a")) location.hash = `run=${run.run_id}`; },
    onkeydown: (e) => { if (e.key === "Enter" && e.target === e.currentTarget) location.hash = `run=${run.run_id}`; } },
  el("td", {}, when(run.started_at)),
  el("td", { class: "name", title: name }, el("a", { href: `#run=${run.run_id}`, tabindex: "-1" }, name)),
  el("td", { class: "program" }, run.program_name
    ? el("a", { href: `#program=${encodeURIComponent(run.program_name)}`, tabindex: "-1", title: `all runs of ${run.program_name}` }, run.program_name)
    : "-"),
  el("td", {}, run.user_name ?? "-"),
  el("td", {}, run.host_name ?? "-"),
  el("td", { class: `status status-${status}`, title: run.status_message ?? "" }, status),
  el("td", { class: "num" }, run.exit_code ?? "-"),
  wallCell(run),
  el("td", { class: "num" }, run.cpu_percent === null ? "-" : run.cpu_percent.toFixed(0)),
  el("td", { class: "num peak-rss", title: run.peak_rss_method ?? "" }, bytes(run.peak_rss_bytes)),
  el("td", { class: "num tree-peak", title: run.tree_peak_method ?? "" }, bytes(run.tree_peak_bytes),
    oomKilled(run) ? el("span", { class: "oom", title: `oom_kills: ${run.oom_kills}` }, " OOM") : ""));
}

// A run's wall time; for a run not ended, how long it has gone (counted on while it runs; to its last heartbeat
// once lost).
function wallCell(run) {
  if (run.ended_at !== null && run.ended_at !== undefined) return el("td", { class: "num" }, seconds(run.wall_seconds));
  return el("td", { class: "num", title: run.status === "lost" ? "until its last heartbeat" : "so far" },
    run.status === "running" ? ticking(run.elapsed_seconds) : seconds(run.elapsed_seconds), "…");
}

// --- running now (refreshing itself) ------------------------------------------------------------------------------
// The runs that match the filters and are still going, above the table, fetched again every LIVE_SECONDS: how long
// each has run (the receiver's figure, counted on here each second, so this browser's clock does not matter) and
// its memory at its last heartbeat. When a run leaves the list (it ended, or was found lost), the table's first
// page is read again so that it shows the run's final figures.
const LIVE_SECONDS = 5;
const live = { ids: null };

// A span that counts on from `base` seconds, once a second, until it leaves the page.
function ticking(base) {
  const span = el("span", { class: "elapsed" }, seconds(base));
  span.dataset.base = String(base ?? 0);
  span.dataset.at = String(performance.now());
  return span;
}
function tick() {
  for (const span of document.querySelectorAll("span.elapsed")) {
    span.textContent = seconds(+span.dataset.base + (performance.now() - +span.dataset.at) / 1000);
  }
}

async function loadRunning() {
  const box = $("#running");
  const params = new URLSearchParams(location.search);
  if (params.get("status") && params.get("status") !== "running") { box.hidden = true; live.ids = null; return; }
  params.set("status", "running");
  params.set("sort", "-started_at");
  params.set("limit", "100");
  let page;
  try { page = await api(`/api/runs?${params}`); } catch { return; }  // the table says what is wrong
  const ids = new Set(page.runs.map((r) => r.run_id));
  if (live.ids && [...live.ids].some((id) => !ids.has(id)) && state.shown <= 50) loadRuns(false);
  live.ids = ids;
  box.hidden = !page.runs.length;
  if (!page.runs.length) { box.replaceChildren(); return; }
  const open = (r) => () => { location.hash = `run=${r.run_id}`; };
  box.replaceChildren(
    el("h2", {}, `Running now: ${page.runs.length}${page.next_cursor ? "+" : ""} `,
      el("span", { class: "muted" }, `refreshed every ${LIVE_SECONDS}s`)),
    el("table", { id: "running-runs" },
      el("thead", {}, el("tr", {}, el("th", {}, "Started (UTC)"), el("th", {}, "Name"), el("th", {}, "Program"),
        el("th", {}, "User"), el("th", {}, "Host"), el("th", { class: "num" }, "Running for"),
        el("th", { class: "num", title: "RSS at its last heartbeat (a command's whole tree)" }, "Memory now"),
        el("th", { class: "num", title: "user + system, at its last heartbeat" }, "CPU so far"),
        el("th", { class: "num" }, "Last heartbeat"))),
      el("tbody", {}, ...page.runs.map((r) => el("tr", { "data-run-id": r.run_id, onclick: open(r) },
        el("td", {}, when(r.started_at)),
        el("td", { class: "name" }, el("a", { href: `#run=${r.run_id}` }, r.task_name ?? r.run_name)),
        el("td", {}, r.program_name ?? "-"), el("td", {}, r.user_name ?? "-"), el("td", {}, r.host_name ?? "-"),
        el("td", { class: "num running-for" }, ticking(r.elapsed_seconds)),
        el("td", { class: "num memory-now" }, bytes(r.last_rss_bytes)),
        el("td", { class: "num" }, seconds(r.cpu_seconds)),
        el("td", { class: "num" }, heartbeatAge(r)))))));
}

// How long ago the run's client last said it was alive, on the receiver's clock (its start + its elapsed time is
// the receiver's now).
function heartbeatAge(run) {
  if (!run.last_heartbeat_at) return "-";
  const now = Date.parse(run.started_at) + (run.elapsed_seconds ?? 0) * 1000;
  return `${seconds(Math.max(0, (now - Date.parse(run.last_heartbeat_at)) / 1000))} ago`;
}

// --- charts (uPlot) -----------------------------------------------------------------------------------------------
// Every chart has both axes with tick values and units, and a tooltip with the values under the mouse. The tick
// labels drawn last are kept on the chart's element (data-x-ticks, data-y-ticks) and the uPlot instance as its
// `uplot` property: for tests and for anyone reading the DOM, since the canvas holds only pixels.
const ACCENT = "#2563eb", BAD = "#c0262d", INK = "#1d2330", GRID = "#e4e7ec";
// Script versions in first-seen order take these colours (red is kept for failed runs).
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"];
const NO_VERSION = "#7f7f7f";
const FONT = "11px system-ui, sans-serif", LABEL_FONT = "12px system-ui, sans-serif";
const W = 560, H = 240;

// nice steps: binary ones for bytes, clock ones for seconds, uPlot's decimal ones otherwise
const BYTE_INCRS = [KiB, MiB, GiB].flatMap((u) => [1, 2, 4, 8, 16, 32, 64, 128, 256, 512].map((m) => m * u)).concat([1024 * GiB]);
const SECOND_INCRS = [0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
  3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400];
const UNITS = {
  bytes: { format: bytes, tick: tickBytes, incrs: BYTE_INCRS },
  seconds: { format: seconds, tick: tickSeconds, incrs: SECOND_INCRS },
  percent: { format: (v) => `${v.toFixed(0)}%`, tick: (v) => `${+v.toFixed(1)}%`, incrs: undefined },
};
// UTC dates for a time axis, as short as the visible span allows
function tickTime(v, u) {
  const iso = new Date(v * 1000).toISOString(), span = u.scales.x.max - u.scales.x.min;
  return span > 4 * 86400 ? iso.slice(0, 10) : span > 86400 ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(11, 19);
}

function chartFrame(id, title) {
  const wrap = el("figure", { class: "chart", id });
  wrap.append(el("figcaption", {}, title));
  return wrap;
}

// An empty chart: its frame and a line saying why.
function noData(id, title, why) {
  const wrap = chartFrame(id, title);
  wrap.dataset.points = "0";
  wrap.append(el("p", { class: "muted nodata" }, why));
  return wrap;
}

function axes(wrap, x, y) {
  const ticks = {};
  const record = (key, fmt) => (u, splits) => (ticks[key] = splits.map((v) => (v === null ? "" : fmt(v, u))));
  const axis = (key, spec, extra) => ({
    label: spec.label, values: record(key, spec.tick), stroke: INK, font: FONT, labelFont: LABEL_FONT,
    grid: { stroke: GRID, width: 1 }, ticks: { stroke: GRID, width: 1 }, ...extra,
    // only what is set: an option given as undefined would replace uPlot's default
    ...(spec.incrs && { incrs: spec.incrs }), ...(spec.space && { space: spec.space }),
  });
  const draw = () => { wrap.dataset.xTicks = JSON.stringify(ticks.x ?? []); wrap.dataset.yTicks = JSON.stringify(ticks.y ?? []); };
  return { axes: [axis("x", x, {}), axis("y", y, { size: 70 })], draw };
}

// The tooltip: `describe(u)` says what is under the mouse ({lines, x, y} in the plot's CSS pixels) or null.
function tooltip(wrap, describe) {
  const tip = el("div", { class: "tip", role: "status" });
  tip.hidden = true;
  return {
    hooks: {
      init: [(u) => u.over.append(tip)],
      setCursor: [(u) => {
        const hit = u.cursor.left >= 0 ? describe(u) : null;
        tip.hidden = !hit;
        if (!hit) { delete wrap.dataset.hover; return; }
        tip.replaceChildren(...hit.lines.map((line, i) => el(i ? "div" : "strong", {}, line)));
        // kept inside the plot: to the left of the point when it is in the right half
        tip.style.left = `${hit.x + (hit.x > u.over.clientWidth / 2 ? -tip.offsetWidth - 10 : 10)}px`;
        tip.style.top = `${Math.max(0, hit.y - tip.offsetHeight - 6)}px`;
        wrap.dataset.hover = hit.id ?? "";
      }],
    },
  };
}

// A line over time: x and y are arrays of numbers, xs and ys their unit specs ({label, tick, format, incrs}).
function lineChart(id, title, x, y, xs, ys, xMax) {
  if (!x.length) return noData(id, title, "no samples");
  const wrap = chartFrame(id, title);
  const { axes: ax, draw } = axes(wrap, xs, ys);
  const tip = tooltip(wrap, (u) => {
    const i = u.cursor.idx;
    if (i === null || i === undefined || u.data[1][i] === null) return null;
    return { x: u.valToPos(u.data[0][i], "x"), y: u.valToPos(u.data[1][i], "y"),
      lines: [ys.format(u.data[1][i]), xs.format(u.data[0][i])] };
  });
  wrap.dataset.points = String(x.length);
  wrap.dataset.yMax = String(Math.max(...y));
  wrap.uplot = new uPlot({
    width: W, height: H, legend: { show: false }, plugins: [tip],
    // from the run's start to its end (or the last sample), from zero up
    scales: { x: { time: false, range: (u, lo, hi) => [0, Math.max(hi, xMax ?? 0) || 1] },
      y: { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.05 : 1] } },
    axes: ax,
    series: [{}, { stroke: ACCENT, width: 1.5, fill: "rgba(37, 99, 235, 0.08)", points: { show: x.length <= 60, size: 5, fill: ACCENT } }],
    cursor: { drag: { x: true, y: false }, points: { size: 8, fill: ACCENT } },
    hooks: { draw: [draw] },
  }, [x, y], wrap);
  return wrap;
}

// Runs as points over time, one colour per script version, failed runs ringed in red; hovering shows the nearest
// run, clicking opens it.
function runsChart(id, title, runs, value, ys, versions) {
  const shown = runs.filter((r) => value(r) !== null && value(r) !== undefined);
  if (!shown.length) return noData(id, title, "no runs with this figure");
  const wrap = chartFrame(id, title);
  const { axes: ax, draw } = axes(wrap, { label: "started (UTC)", tick: tickTime, space: 90 }, ys);
  const x = shown.map((r) => Date.parse(r.started_at) / 1000);
  const data = [x, ...versions.map((v) => shown.map((r) => (r.script_sha256 ?? null) === v.sha ? value(r) : null)),
    shown.map((r) => (r.status === "error" ? value(r) : null))];
  const near = (u) => {
    let best = null, bestD = 24 * 24;
    shown.forEach((r, i) => {
      const dx = u.valToPos(x[i], "x") - u.cursor.left, dy = u.valToPos(value(r), "y") - u.cursor.top, d = dx * dx + dy * dy;
      if (d < bestD) { best = i; bestD = d; }
    });
    return best;
  };
  const tip = tooltip(wrap, (u) => {
    const i = near(u);
    if (i === null) return null;
    const r = shown[i];
    return { id: r.run_id, x: u.valToPos(x[i], "x"), y: u.valToPos(value(r), "y"),
      lines: [ys.format(value(r)), `${when(r.started_at)} · ${r.status}`, `version ${shortSha(r.script_sha256)}`, r.task_name ?? r.run_name] };
  });
  const dot = (colour) => ({ stroke: colour, paths: () => null, points: { show: true, size: 8, width: 1, stroke: colour, fill: colour } });
  wrap.dataset.points = String(shown.length);
  wrap.dataset.yMax = String(Math.max(...shown.map(value)));
  wrap.uplot = new uPlot({
    width: W, height: H, legend: { show: false }, plugins: [tip],
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
    // padded, so that the first and last runs' points are not cut by the plot's edges
    scales: { x: { range: (u, lo, hi) => { const pad = Math.max((hi - lo) * 0.04, 1800); return [lo - pad, hi + pad]; } },
      y: { range: (u, lo, hi) => [0, hi > 0 ? hi * 1.08 : 1] } },
    axes: ax,
    series: [{}, ...versions.map((v) => ({ label: shortSha(v.sha), ...dot(v.colour) })),
      { label: "failed", stroke: BAD, paths: () => null, points: { show: true, size: 13, width: 2, stroke: BAD, fill: "rgba(0,0,0,0)" } }],
    cursor: { points: { show: false }, drag: { x: true, y: false } },
    hooks: { draw: [draw] },
  }, data, wrap);
  wrap.uplot.over.addEventListener("click", () => { if (wrap.dataset.hover) location.hash = `run=${wrap.dataset.hover}`; });
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

// --- views --------------------------------------------------------------------------------------------------------
const VIEWS = ["#run-detail", "#program-detail", "#workflow-detail"];

// Shows one view in place of the others; `again` (a view refreshing itself) leaves the scroll and focus alone.
function show(id, again, ...content) {
  for (const other of VIEWS) if (other !== id) $(other).hidden = true;
  const box = $(id);
  const close = el("a", { href: "#", class: "close", title: "back to the runs (Esc)" }, "× close");
  box.replaceChildren(close, ...content);
  box.hidden = false;
  if (!again) {
    box.scrollIntoView();
    box.querySelector("h2")?.focus({ preventScroll: true });
  }
  return box;
}

// --- one run ------------------------------------------------------------------------------------------------------
// A run still going is read again every LIVE_SECONDS while its view is open.
async function showRun(id, again = false) {
  try {
    const [run, metrics] = await Promise.all([api(`/api/runs/${id}`), api(`/api/runs/${id}/metrics`)]);
    const { memory, cpu } = timelines(metrics.series, Date.parse(run.started_at));
    const status = run.status;
    const attrs = el("dl", { class: "attrs" });
    const ended = run.ended_at !== null && run.ended_at !== undefined;
    const facts = {
      run_id: run.run_id, name: run.run_name, program: run.program_name,
      status: `${status}${run.status_message ? ` (${run.status_message})` : ""}`,
      exit_code: run.exit_code, user: run.user_name, host: run.host_name, started_at: when(run.started_at),
      wall: ended ? seconds(run.wall_seconds) : null,
      cpu: ended ? `${seconds(run.cpu_seconds)} (${run.cpu_percent?.toFixed(0) ?? "-"} %)` : `${seconds(run.cpu_seconds)} so far`,
    };
    const more = {
      script: run.script_path, script_sha256: run.script_sha256, command: (run.command_args || []).join(" "),
      runtime: run.runtime,
    };
    const addFacts = (o) => {
      for (const [k, v] of Object.entries(o)) if (v !== null && v !== undefined && v !== "") attrs.append(el("dt", {}, k), el("dd", { id: `fact-${k}` }, String(v)));
    };
    addFacts(facts);
    if (!ended) attrs.append(...liveFacts(run));
    attrs.append(...memoryFacts(run));
    addFacts(more);
    for (const [k, v] of Object.entries(run.attributes)) attrs.append(el("dt", {}, k), el("dd", { class: "custom" }, JSON.stringify(v)));
    const since = { label: "seconds since the run started", tick: tickSeconds, format: (v) => `at ${seconds(v)}`, incrs: SECOND_INCRS };
    const plots = el("div", { class: "plots" },
      lineChart("memory-plot", "memory over time (RSS)", memory.map((p) => p.x), memory.map((p) => p.y), since, { ...UNITS.bytes, label: "RSS" }, run.wall_seconds ?? run.elapsed_seconds),
      lineChart("cpu-plot", "CPU over time (% of one core)", cpu.map((p) => p.x), cpu.map((p) => p.y), since, { ...UNITS.percent, label: "CPU (% of one core)" }, run.wall_seconds ?? run.elapsed_seconds));
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
    if (again && location.hash !== `#run=${id}`) return;  // the view was left meanwhile
    const output = outputOf(run);
    const samples = memory.length || cpu.length ? plots
      : el("p", { class: "muted" }, ended ? "no samples: the run ended before its first sample (one second in)" : "no samples yet");
    show("#run-detail", again,
      el("h2", { tabindex: "-1" }, `Run ${run.run_name} `, el("span", { class: `status-${status}` }, status), el("span", { class: "muted" }, ` ${run.run_id}`)),
      programLink, workflowId && programLink ? " · " : "", workflowLink, attrs,
      // what a failed run said comes first: it is why the run is being looked at
      ...(status === "error" ? [...output, samples] : [samples, ...output]),
      el("h3", {}, "Child spans"), children);
    if (status === "running") setTimeout(() => { if (location.hash === `#run=${id}`) showRun(id, true); }, LIVE_SECONDS * 1000);
  } catch (err) { showError(err); }
}

// What the run said (docs/querying.md): the exceptions it recorded (type, message, stack trace), the stderr tail
// `glia run --keep-stderr` kept (a log record of event glia.run.stderr), and its other log records, newest last.
const STDERR_EVENT = "glia.run.stderr";

function outputOf(run) {
  const out = [];
  for (const [i, e] of (run.exceptions ?? []).entries()) {
    out.push(el("div", { class: "exception", id: i ? `exception-${i}` : "exception" },
      el("h3", {}, "Exception ", el("span", { class: "bad" }, `${e.type ?? "?"}: `), e.message ?? ""),
      e.stacktrace ? el("pre", { class: "output" }, e.stacktrace) : ""));
  }
  const logs = run.logs ?? [];
  for (const r of logs.filter((r) => r.event_name === STDERR_EVENT)) {
    const a = r.attributes ?? {};
    const what = [a["glia.stderr.lines"] !== undefined && `${a["glia.stderr.lines"]} lines`,
      a["glia.stderr.bytes"] !== undefined && `${bytes(a["glia.stderr.bytes"])} written`,
      a["glia.stderr.truncated"] && "earlier lines not kept"].filter(Boolean).join(", ");
    out.push(el("div", { class: "stderr" }, el("h3", {}, "stderr, its last lines ", el("span", { class: "muted" }, what ? `(${what})` : "")),
      el("pre", { class: "output", id: "run-stderr" }, r.body ?? "")));
  }
  const others = logs.filter((r) => r.event_name !== STDERR_EVENT);
  if (others.length) {
    const child = new Map((run.children ?? []).map((c) => [c.span_id, c.name]));
    out.push(el("div", { class: "logs" },
      el("h3", {}, `Logs `, el("span", { class: "muted" }, `(${others.length}${run.logs_truncated ? ", the newest only" : ""}, newest last)`)),
      el("table", { id: "run-logs", class: "compact" },
        el("thead", {}, el("tr", {}, el("th", {}, "Time (UTC)"), el("th", {}, "Severity"), el("th", {}, "Message"), el("th", {}, "Span"))),
        el("tbody", {}, ...others.map((r) => el("tr", { class: r.severity_number >= 17 ? "severe" : "" },
          el("td", {}, when(r.time)), el("td", { class: "severity" }, r.severity_text || severityName(r.severity_number)),
          el("td", { class: "body" }, r.body ?? (r.event_name || "")),
          el("td", { class: "muted" }, child.get(r.span_id) ?? (r.span_id === run.run_id ? "" : r.span_id))))))));
  }
  return out;
}
// OTLP's SeverityNumber ranges: 1-4 TRACE, 5-8 DEBUG, 9-12 INFO, 13-16 WARN, 17-20 ERROR, 21-24 FATAL
const severityName = (n) => (n ? ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"][Math.min(5, Math.floor((n - 1) / 4))] : "-");

// A run not ended: how long it has gone, its memory at its last heartbeat, and when that was.
function liveFacts(run) {
  const out = [
    el("dt", {}, run.status === "lost" ? "ran for" : "running for"),
    el("dd", { id: "fact-elapsed" }, run.status === "running" ? ticking(run.elapsed_seconds) : seconds(run.elapsed_seconds),
      run.status === "lost" ? " (until its last heartbeat)" : ""),
    el("dt", {}, "memory now"),
    el("dd", { id: "fact-memory-now", title: "RSS at its last heartbeat (a command's whole tree)" }, bytes(run.last_rss_bytes)),
    el("dt", {}, "last heartbeat"),
    el("dd", { id: "fact-heartbeat" }, run.last_heartbeat_at ? `${when(run.last_heartbeat_at)} (${heartbeatAge(run)})` : "-"),
  ];
  if (run.lost_at) out.push(el("dt", {}, "lost at"), el("dd", {}, `${when(run.lost_at)} (its heartbeats stopped)`));
  return out;
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

// The program's script versions in first-seen order, each with its colour, its runs here and how many failed.
function versionsOf(runs) {
  const groups = new Map();
  for (const r of runs) {
    const sha = r.script_sha256 ?? null;
    if (!groups.has(sha)) groups.set(sha, []);
    groups.get(sha).push(r);
  }
  let next = 0;
  return [...groups.entries()].map(([sha, rs]) => ({
    sha, runs: rs, colour: sha === null ? NO_VERSION : PALETTE[next++ % PALETTE.length],
    first: rs[0].started_at, failed: rs.filter((r) => r.status === "error").length,
  }));
}

// The colour key of the charts: each version, when it was first seen, its runs here and how many failed.
function versionTable(versions) {
  return el("table", { id: "program-versions", class: "compact" },
    el("thead", {}, el("tr", {}, el("th", {}, "Script version"), el("th", {}, "First seen (UTC)"), el("th", { class: "num" }, "Runs shown"),
      el("th", { class: "num" }, "Failed"))),
    el("tbody", {}, ...versions.map((v) => el("tr", { "data-version": v.sha ?? "", "data-colour": v.colour },
      el("td", { title: v.sha ?? "" }, swatch(v.colour), ` ${shortSha(v.sha)}`),
      el("td", {}, when(v.first)), el("td", { class: "num" }, v.runs.length),
      el("td", { class: v.failed ? "num bad" : "num" }, v.failed)))));
}
const swatch = (colour) => el("span", { class: "swatch", style: `background:${colour}` });

// /api/compare: the program's script versions, each against the one before it (median and p95 of wall time, CPU
// time and memory; a figure flagged by the receiver's stated rule), and its findings in words.
const COMPARED = [["wall_seconds", "wall", seconds], ["cpu_seconds", "CPU time", seconds], ["memory_bytes", "memory", bytes]];

function compareView(answer, versions) {
  const colour = new Map(versions.map((v) => [v.sha, v.colour]));
  const out = [el("h3", {}, "Script versions compared")];
  if (answer instanceof Error) return el("div", { id: "program-compare" }, ...out, el("p", { class: "error" }, `compare: ${answer.message}`));
  out.push(answer.findings.length
    ? el("ul", { id: "compare-findings" }, ...answer.findings.map((f) => el("li", { class: "finding" }, f)))
    : el("p", { id: "compare-findings", class: "muted" }, answer.groups.length > 1
      ? "no version differs from the one before it by the rule below" : "one script version: nothing to compare"));
  if (answer.groups.length) {
    const figure = (f, fmt) => (f.median === null ? el("td", { class: "num muted" }, "-")
      : el("td", { class: "num" }, fmt(f.median), el("span", { class: "muted" }, ` · p95 ${fmt(f.p95)}`)));
    const versus = (vs) => {
      if (!vs || vs.ratio === null) return el("td", { class: "num muted" }, "-");
      const p = vs.p === null ? "" : vs.p < 0.001 ? " p < 0.001" : ` p = ${vs.p.toFixed(3)}`;
      return el("td", { class: vs.flagged ? "num flagged" : "num", title: `${vs.runs} vs ${vs.reference_runs} runs` },
        `${vs.ratio.toFixed(vs.ratio >= 0.995 ? 1 : 2)}x`, el("span", { class: "muted" }, p));
    };
    out.push(el("table", { id: "compare-table", class: "compact" },
      el("thead", {}, el("tr", {}, el("th", {}, "Version"), el("th", { class: "num" }, "Runs"),
        ...COMPARED.map(([, label]) => el("th", { class: "num" }, `Median ${label}`)),
        ...COMPARED.map(([, label]) => el("th", { class: "num", title: "median / the previous version's median" }, `${label} vs previous`)))),
      el("tbody", {}, ...answer.groups.map((g) => el("tr", { "data-version": g.group },
        el("td", { title: g.group }, swatch(colour.get(g.group) ?? NO_VERSION), ` ${g.label}`),
        el("td", { class: "num" }, g.runs),
        ...COMPARED.map(([key, , fmt]) => figure(g[key], fmt)),
        ...COMPARED.map(([key]) => versus(g.versus?.[key])))))));
  }
  const rule = answer.rule;
  out.push(el("details", { class: "rule" }, el("summary", {}, "the rule"),
    el("p", {}, `Runs: ${rule.runs}. Memory: ${rule.memory}. Reference: ${rule.reference}. Flagged: ${rule.flag}. Test: ${rule.test}.`),
    el("p", {}, "In the terminal: ", el("code", {}, `glia compare ${answer.program}`))));
  return el("div", { id: "program-compare" }, ...out);
}

// /api/suggest: what to request for the program's next runs, from its successful runs of the last 30 days.
function suggestView(answer, name) {
  const out = [el("h3", {}, "What to request")];
  if (answer instanceof Error) return el("div", { id: "program-suggest" }, ...out, el("p", { class: "error" }, `suggest: ${answer.message}`));
  const groups = answer.groups;
  if (!groups.length) return el("div", { id: "program-suggest" }, ...out, el("p", { class: "muted" }, "no successful runs in the last 30 days"));
  const slurmTime = (s) => {
    const m = Math.round(s / 60), d = Math.floor(m / 1440), h = Math.floor((m % 1440) / 60), r = m % 60;
    return `${d ? `${d}-` : ""}${String(h).padStart(2, "0")}:${String(r).padStart(2, "0")}:00`;
  };
  const used = (x) => (x ? ` (median request ${x.fmt}, ${(100 * x.median_used).toFixed(0)}% used)` : "");
  out.push(el("table", { id: "suggest-table", class: "compact" },
    el("thead", {}, el("tr", {}, el("th", {}, "Program"), el("th", { class: "num" }, "Runs"), el("th", { class: "num" }, "Memory"),
      el("th", { class: "num" }, "Time"), el("th", { class: "num" }, "CPUs"), el("th", {}, "Notes"))),
    el("tbody", {}, ...groups.map((g) => {
      const rec = g.recommended, req = g.requested ?? {};
      const memReq = req.memory && { ...req.memory, fmt: bytes(req.memory.median_bytes) };
      const timeReq = req.time && { ...req.time, fmt: seconds(req.time.median_seconds) };
      const cpuReq = req.cpus && { ...req.cpus, fmt: String(req.cpus.median_cpus) };
      return el("tr", { "data-program": g.program_name },
        el("td", {}, g.program_name), el("td", { class: "num" }, g.runs),
        el("td", { class: rec.memory_raised_by_oom ? "num flagged" : "num", title: `${g.memory.measure}: p95 ${bytes(g.memory.p95_bytes)}` },
          rec.memory_bytes === null ? "-" : bytes(rec.memory_bytes), used(memReq)),
        el("td", { class: "num", title: `wall time p95 ${seconds(g.wall_seconds.p95)}` }, rec.seconds === null ? "-" : seconds(rec.seconds), used(timeReq)),
        el("td", { class: "num", title: `cpu_percent p95 ${g.cpu_percent.p95?.toFixed(0) ?? "-"}%` }, rec.cpus ?? "-", used(cpuReq)),
        el("td", { class: "muted" }, g.notes.join("; ")));
    }))));
  const g = groups[0], rec = g.recommended;
  const lines = [rec.memory_bytes !== null && `#SBATCH --mem=${Math.floor(rec.memory_bytes / MiB)}M`,
    rec.seconds !== null && `#SBATCH --time=${slurmTime(rec.seconds)}`, rec.cpus !== null && `#SBATCH --cpus-per-task=${rec.cpus}`].filter(Boolean);
  if (groups.length === 1 && lines.length) out.push(el("pre", { id: "suggest-slurm" }, lines.join("\n")));
  const rule = answer.rule;
  out.push(el("details", { class: "rule" }, el("summary", {}, "the rule"),
    el("p", {}, `Runs: ${rule.runs}. Memory: ${rule.memory}; ${rule.oom}. Time: ${rule.time}. CPUs: ${rule.cpus}. ${rule.efficiency}.`),
    el("p", {}, "In the terminal, also as a Nextflow or Snakemake block: ",
      el("code", {}, `glia suggest --program ${name} --format slurm|nextflow|snakemake`))));
  return el("div", { id: "program-suggest" }, ...out);
}

async function showProgram(name) {
  try {
    const settle = (p) => p.catch((err) => (err instanceof Error ? err : new Error(String(err))));
    const [page, compared, suggested] = await Promise.all([
      api(`/api/runs?${new URLSearchParams({ program: name, limit: "500", sort: "-started_at" })}`),
      settle(api(`/api/compare?${new URLSearchParams({ program: name })}`)),
      settle(api(`/api/suggest?${new URLSearchParams({ program: name })}`)),
    ]);
    const runs = page.runs.slice().reverse();
    const versions = versionsOf(runs);
    const failed = runs.filter((r) => r.status === "error").length;
    const filterLink = el("a", { href: `?${new URLSearchParams({ program: name })}`, id: "program-filter-link" }, "list them in the table");
    show("#program-detail", false,
      el("h2", { tabindex: "-1" }, `Program ${name}`),
      el("p", {}, `${runs.length} most recent runs${page.next_cursor ? " (older ones not shown)" : ""}, `
        + `${versions.length} script version${versions.length === 1 ? "" : "s"}, ${failed} failed (ringed in red) · `, filterLink),
      versionTable(versions),
      el("div", { class: "plots" },
        runsChart("program-wall-plot", "wall time per run, by script version", runs, (r) => r.wall_seconds, { ...UNITS.seconds, label: "wall time" }, versions),
        runsChart("program-memory-plot", "peak memory per run (largest process), by script version", runs, (r) => r.peak_rss_bytes,
          { ...UNITS.bytes, label: "peak RSS" }, versions)),
      el("div", { class: "answers" }, compareView(compared, versions), suggestView(suggested, name)));
  } catch (err) { showError(err); }
}

// --- one workflow -------------------------------------------------------------------------------------------------
// A workflow's runs come from /api/runs?workflow=ID (its engine's workflow_run_id, or the workflow span's run id),
// in start order, page after page up to WORKFLOW_MAX_RUNS; the workflow span itself (run_kind "workflow") heads the
// view, every other run is a task: one row of the timeline each, a bar from its start to its end.
const WORKFLOW_MAX_RUNS = 5000;

async function showWorkflow(id) {
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
    const head = [el("h2", { tabindex: "-1" }, `Workflow ${name}`)];
    const facts = el("dl", { class: "attrs" });
    const add = (k, v) => { if (v !== null && v !== undefined && v !== "") facts.append(el("dt", {}, k), el("dd", {}, String(v))); };
    add("workflow_run_id", workflow?.workflow_run_id ?? tasks[0]?.workflow_run_id ?? id);
    add("engine", workflow?.workflow_engine ?? tasks[0]?.workflow_engine);
    if (workflow) {
      add("status", workflow.status);
      add("wall", workflow.ended_at ? seconds(workflow.wall_seconds) : `${seconds(workflow.elapsed_seconds)} so far`);
      head.push(el("a", { href: `#run=${workflow.run_id}`, id: "workflow-run-link" }, "the workflow's own run"));
    } else {
      head.push(el("p", { class: "muted" }, "the workflow's own span has not arrived: its tasks, grouped by their workflow_run_id"));
    }
    add("tasks", `${tasks.length}${cursor ? ` shown (more not loaded: past ${WORKFLOW_MAX_RUNS})` : ""}, ${failed} failed`);
    show("#workflow-detail", false, ...head, facts,
      el("p", { class: "muted" }, "one row per task attempt (#2 a retry), from its start to its end; green ok, red failed,"
        + " blue running, amber lost; after each bar its wall time / peak memory (largest process, GNU time %M)"),
      el("div", { id: "workflow-timeline" }, timeline(tasks, workflow)),
      taskTable(tasks));
  } catch (err) { showError(err); }
}

// One row per task, as Nextflow's timeline report draws them: the task's name on the left, a bar from its start
// to its end on a shared time axis, its wall time and peak memory (the largest process's) after the bar; each row
// links to the task's run. The bar's colour is its status.
function timeline(tasks, workflow) {
  const ROW = 18, L = 280, R = 170, T = 8, B = 28, TW = 1100;
  const ns = "http://www.w3.org/2000/svg";
  const TH = T + B + ROW * Math.max(tasks.length, 1);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", TW); svg.setAttribute("height", TH); svg.setAttribute("viewBox", `0 0 ${TW} ${TH}`);
  svg.setAttribute("class", "timeline");
  svg.setAttribute("data-tasks", String(tasks.length));
  const make = (tag, attrs, text) => {
    const n = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, v);
    if (text !== undefined) n.textContent = text;
    return n;
  };
  if (!tasks.length) { svg.append(make("text", { x: TW / 2, y: TH / 2, "text-anchor": "middle" }, "no tasks")); return svg; }
  const ms = (iso) => Date.parse(iso);
  // a run not ended reaches as far as it has gone (running: to now; lost: to its last heartbeat)
  const end = (r) => (r.ended_at ? ms(r.ended_at) : ms(r.started_at) + (r.elapsed_seconds ?? 0) * 1000);
  const starts = tasks.map((t) => ms(t.started_at)), ends = tasks.map(end);
  const t0 = Math.min(...starts, workflow ? ms(workflow.started_at) : Infinity);
  let t1 = Math.max(...ends, workflow ? end(workflow) : -Infinity);
  if (t1 <= t0) t1 = t0 + 1000;
  const sx = (t) => L + ((t - t0) / (t1 - t0)) * (TW - L - R);
  // the time axis: five ticks, seconds from the first start
  svg.append(make("line", { class: "axis", x1: L, y1: TH - B, x2: TW - R, y2: TH - B }));
  for (let i = 0; i <= 4; i++) {
    const x = L + (i / 4) * (TW - L - R);
    svg.append(make("line", { class: "grid", x1: x, y1: T, x2: x, y2: TH - B }));
    svg.append(make("text", { x, y: TH - 10, "text-anchor": "middle" }, seconds(((t1 - t0) / 1000) * (i / 4))));
  }
  tasks.forEach((task, i) => {
    const y = T + i * ROW;
    const x0 = sx(ms(task.started_at)), x1 = Math.max(sx(end(task)), x0 + 1);  // a 0 s task still shows
    const label = `${task.task_name ?? task.run_name}${task.task_attempt > 1 ? ` #${task.task_attempt}` : ""}`;
    const status = task.status;
    const row = make("a", { href: `#run=${task.run_id}`, class: "task", "data-run-id": task.run_id, "data-status": status });
    const wall = seconds(task.wall_seconds ?? task.elapsed_seconds);
    row.append(make("title", {}, `${label}: ${status}, ${wall}, peak ${bytes(task.peak_rss_bytes)}`));
    row.append(make("text", { class: "label", x: L - 6, y: y + ROW - 5, "text-anchor": "end" },
      label.length > 44 ? `${label.slice(0, 43)}…` : label));
    row.append(make("rect", { class: `bar ${status}`, x: x0.toFixed(1), y: y + 3, width: (x1 - x0).toFixed(1), height: ROW - 6 }));
    row.append(make("text", { class: "figures", x: x1 + 4, y: y + ROW - 5 },
      `${wall}${task.ended_at ? "" : "…"} / ${bytes(task.peak_rss_bytes ?? task.last_rss_bytes)}`));
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
  else for (const id of VIEWS) $(id).hidden = true;
}

// Back to the runs: the view closed, the filters kept, focus on the row the view came from.
function closeView() {
  const hash = decodeURIComponent(location.hash.slice(1));
  history.pushState(null, "", `${location.pathname}${location.search}`);
  route();
  const row = hash.startsWith("run=") && document.querySelector(`#runs tr[data-run-id="${CSS.escape(hash.slice(4))}"]`);
  (row || $("#runs tbody tr"))?.focus();
}

// Keys: "/" to the filters, j/k or the arrows through the rows, Enter opens one, Esc closes the view (or leaves a
// field). A key with a modifier, or typed into a field, is the browser's.
function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const inField = e.target.closest("input, select, textarea");
  if (e.key === "Escape") {
    if (inField) e.target.blur();
    else if (VIEWS.some((id) => !$(id).hidden)) closeView();
    return;
  }
  if (inField) return;
  if (e.key === "/") { e.preventDefault(); $("#filters input").focus(); return; }
  const step = { j: 1, ArrowDown: 1, k: -1, ArrowUp: -1 }[e.key];
  const rows = [...document.querySelectorAll("#runs tbody tr")];
  if (step && rows.length && (e.target === document.body || rows.includes(e.target))) {
    e.preventDefault();
    const at = rows.indexOf(e.target);
    rows[Math.max(0, Math.min(rows.length - 1, at < 0 ? 0 : at + step))].focus();
  }
}

// Back and Forward: the filters of the entry (the hash's view follows from hashchange)
function onHistory() {
  if (location.search === state.search) return;
  state.search = location.search;
  filtersToForm(new URLSearchParams(location.search));
  loadRuns(false);
  loadRunning();
}

$("#filters").addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
// a choice from a list applies at once; text fields on Enter
for (const select of document.querySelectorAll("#filters select")) select.addEventListener("change", applyFilters);
$("#more").addEventListener("click", () => loadRuns(true));
$("#key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  localStorage.setItem("glia-key", new FormData(e.target).get("key"));
  $("#key-form").hidden = true;
  loadRuns(false);
  route();
});
for (const id of VIEWS) $(id).addEventListener("click", (e) => { if (e.target.closest("a.close")) { e.preventDefault(); closeView(); } });
document.addEventListener("keydown", onKey);
window.addEventListener("popstate", onHistory);
window.addEventListener("hashchange", route);
state.search = location.search;
filtersToForm(new URLSearchParams(location.search));
loadRuns(false);
loadRunning();
route();
setInterval(tick, 1000);
setInterval(() => { if (!document.hidden) loadRunning(); }, LIVE_SECONDS * 1000);
