// ConScope dashboard: reads the JSON API and draws its own SVG charts (no libraries).
// State lives in the URL (?event=ID&range=24h) so a view can be linked and reloaded.
// Everything from the data is inserted as text (textContent), never as HTML.
"use strict";

const RANGES = ["6h", "24h", "48h", "72h", "7d"];
const REFRESH_MS = 5000;
const SVG_NS = "http://www.w3.org/2000/svg";

const state = { event: "", range: "24h", events: [], timer: null, loading: false };

// ---- formatting -------------------------------------------------------------------------
const money = (v) =>
  v === null || v === undefined
    ? "–"
    : "$" + Number(v).toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const count = (v) => (v === null || v === undefined ? "–" : Number(v).toLocaleString("en-US"));
const pct = (v) => Number(v).toFixed(1) + "%";
const ms = (seconds) => (seconds * 1000).toLocaleString("en-US", { maximumFractionDigits: 1 }) + " ms";
const time = (iso) => new Date(iso).toLocaleString("en-GB", { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });

function $(id) {
  return document.getElementById(id);
}

function setText(id, text, raw) {
  const el = $(id);
  el.textContent = text;
  if (raw !== undefined) el.dataset.value = raw === null ? "" : String(raw);
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- API --------------------------------------------------------------------------------
async function api(path) {
  const res = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(`${path}: ${body.error || res.status}`);
  return body;
}

// ---- URL state --------------------------------------------------------------------------
function readUrl() {
  const q = new URLSearchParams(location.search);
  state.event = q.get("event") || "";
  const r = q.get("range");
  state.range = RANGES.includes(r) ? r : "24h";
}

function writeUrl() {
  const q = new URLSearchParams();
  if (state.event) q.set("event", state.event);
  q.set("range", state.range);
  history.replaceState(null, "", "?" + q.toString());
}

// ---- scales -----------------------------------------------------------------------------
function niceTicks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(v);
  return out;
}

// ---- price history chart ----------------------------------------------------------------
function drawPriceChart(data) {
  const root = $("price-chart");
  root.replaceChildren();
  const W = 900, H = 320, L = 64, R = 14, T = 12, B = 30;
  const buckets = data ? data.buckets : [];
  const drops = data ? data.drops : [];
  root.dataset.buckets = String(buckets.length);
  root.dataset.markers = String(drops.length);
  if (!buckets.length) {
    root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" },
      data ? "No prices in this range" : "No events yet"));
    return;
  }
  const from = Date.parse(data.from), to = Date.parse(data.to);
  let lo = Math.min(...buckets.map((b) => b.min), ...drops.map((d) => d.new_price));
  let hi = Math.max(...buckets.map((b) => b.max), ...drops.map((d) => d.old_price));
  const pad = (hi - lo) * 0.08 || hi * 0.05 || 1;
  lo = Math.max(0, lo - pad);
  hi = hi + pad;
  const x = (t) => L + ((t - from) / (to - from)) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);

  for (const v of niceTicks(lo, hi, 5)) {
    root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid-line" }));
    root.appendChild(svg("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, money(v).replace(/\.00$/, "")));
  }
  const span = to - from;
  for (let i = 0; i <= 6; i++) {
    const t = from + (span * i) / 6;
    root.appendChild(svg("text", { x: x(t), y: H - 10, "text-anchor": i === 0 ? "start" : i === 6 ? "end" : "middle" }, time(new Date(t).toISOString())));
  }
  root.appendChild(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));

  // Break the band and line where several buckets in a row are empty, so a gap in the data is
  // not drawn as data (one empty bucket is just a poll interval longer than a bucket).
  const step = data.bucket_seconds * 1000;
  const segments = [];
  let current = [];
  for (const b of buckets) {
    const t = Date.parse(b.t);
    if (current.length && t - Date.parse(current[current.length - 1].t) > step * 3.5) {
      segments.push(current);
      current = [];
    }
    current.push(b);
  }
  segments.push(current);
  for (const seg of segments) {
    const mid = (b) => x(Date.parse(b.t) + step / 2);
    const top = seg.map((b) => `${mid(b).toFixed(1)},${y(b.max).toFixed(1)}`);
    const bottom = seg.slice().reverse().map((b) => `${mid(b).toFixed(1)},${y(b.min).toFixed(1)}`);
    if (seg.length === 1) {
      const b = seg[0];
      root.appendChild(svg("rect", { x: mid(b) - 2, width: 4, y: y(b.max), height: Math.max(1, y(b.min) - y(b.max)), class: "band" }));
    } else {
      root.appendChild(svg("polygon", { points: top.concat(bottom).join(" "), class: "band" }));
    }
    const line = svg("polyline", { points: seg.map((b) => `${mid(b).toFixed(1)},${y(b.mean).toFixed(1)}`).join(" "), class: "mean" });
    root.appendChild(line);
    for (const b of seg) {
      const hit = svg("circle", { cx: mid(b), cy: y(b.mean), r: seg.length === 1 ? 3 : 0.1, class: "mean" });
      hit.appendChild(svg("title", {}, `${time(b.t)} · mean ${money(b.mean)} · ${money(b.min)}–${money(b.max)} · ${count(b.observations)} obs.`));
      root.appendChild(hit);
    }
  }
  for (const d of drops) {
    const cx = x(Date.parse(d.alert_timestamp)), cy = y(d.new_price);
    const tri = svg("polygon", { points: `${cx - 5},${cy - 5} ${cx + 5},${cy - 5} ${cx},${cy + 4}`, class: "marker" });
    tri.appendChild(svg("title", {}, `${time(d.alert_timestamp)} · ${money(d.old_price)} → ${money(d.new_price)} (−${pct(d.drop_percent)}) · ${d.section} ${d.row}`));
    root.appendChild(tri);
  }
}

// ---- price distribution -----------------------------------------------------------------
function drawHistogram(dist) {
  const root = $("price-histogram");
  root.replaceChildren();
  const W = 440, H = 260, L = 44, R = 10, T = 10, B = 34;
  const counts = dist ? dist.counts : [];
  const total = counts.reduce((a, b) => a + b, 0);
  root.dataset.total = String(total);
  root.dataset.bins = String(counts.length);
  if (!total) {
    root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "No prices in this range"));
    return;
  }
  const top = Math.max(...counts);
  const bw = (W - L - R) / counts.length;
  const y = (v) => T + (1 - v / top) * (H - T - B);
  for (const v of niceTicks(0, top, 4)) {
    root.appendChild(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid-line" }));
    root.appendChild(svg("text", { x: L - 5, y: y(v) + 4, "text-anchor": "end" }, count(Math.round(v))));
  }
  counts.forEach((c, i) => {
    const lo = dist.lo + i * dist.bin_width;
    const bar = svg("rect", { x: L + i * bw + 1, width: Math.max(1, bw - 2), y: y(c), height: H - B - y(c), class: "bar" });
    bar.appendChild(svg("title", {}, `${money(lo)}–${money(lo + dist.bin_width)}: ${count(c)} observations`));
    root.appendChild(bar);
  });
  root.appendChild(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  for (const [i, anchor] of [[0, "start"], [counts.length / 2, "middle"], [counts.length, "end"]]) {
    root.appendChild(svg("text", { x: L + i * bw, y: H - B + 16, "text-anchor": anchor }, money(dist.lo + i * dist.bin_width).replace(/\.00$/, "")));
  }
}

// ---- tables -----------------------------------------------------------------------------
function safeUrl(u) {
  return typeof u === "string" && /^https?:\/\//i.test(u) ? u : null;
}

function fillDrops(alerts) {
  const body = $("drops-table").querySelector("tbody");
  body.replaceChildren();
  for (const a of alerts) {
    const tr = el("tr", { class: "drop-row", "data-alert": a.alert_id });
    tr.appendChild(el("td", {}, time(a.alert_timestamp)));
    tr.appendChild(el("td", {}, a.event_name));
    tr.appendChild(el("td", {}, [a.section, a.row, a.seat].filter(Boolean).join(" · ") || "–"));
    tr.appendChild(el("td", { class: "num" }, money(a.old_price)));
    tr.appendChild(el("td", { class: "num" }, money(a.new_price)));
    tr.appendChild(el("td", { class: "num drop" }, "−" + pct(a.drop_percent)));
    tr.appendChild(el("td", {}, a.source));
    const link = el("td");
    const url = safeUrl(a.listing_url);
    if (url) link.appendChild(el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, "open ↗"));
    else link.textContent = "–";
    tr.appendChild(link);
    body.appendChild(tr);
  }
  $("drops-empty").hidden = alerts.length > 0;
  $("drops-table").dataset.rows = String(alerts.length);
}

function fillWindows(rows) {
  const panel = $("windows-panel");
  const body = $("windows-table").querySelector("tbody");
  body.replaceChildren();
  panel.hidden = rows.length === 0;
  for (const w of rows.slice(-50).reverse()) {
    const tr = el("tr");
    tr.appendChild(el("td", {}, time(w.window_start)));
    tr.appendChild(el("td", {}, w.width_seconds >= 3600 ? w.width_seconds / 3600 + " h" : w.width_seconds / 60 + " min"));
    tr.appendChild(el("td", {}, w.source));
    tr.appendChild(el("td", { class: "num" }, count(w.observations)));
    tr.appendChild(el("td", { class: "num" }, money(w.min_price)));
    tr.appendChild(el("td", { class: "num" }, money(w.mean_price)));
    tr.appendChild(el("td", { class: "num" }, money(w.max_price)));
    tr.appendChild(el("td", { class: "num" }, count(w.drops)));
    body.appendChild(tr);
  }
}

// ---- engine -----------------------------------------------------------------------------
function bars(id, rows) {
  const root = $(id);
  root.replaceChildren();
  if (!rows.length) {
    root.appendChild(el("div", { class: "muted" }, "no data yet"));
    return;
  }
  for (const r of rows) {
    const row = el("div", { class: "bar-row", "data-name": r.name, "data-value": String(r.value) });
    row.appendChild(el("span", {}, r.name));
    const track = el("div", { class: "track" });
    const fill = el("div", { class: "fill" + (r.warn && r.fraction > 0.75 ? " high" : "") });
    fill.style.width = Math.min(100, Math.max(r.value > 0 ? 2 : 0, r.fraction * 100)).toFixed(1) + "%";
    track.appendChild(fill);
    row.appendChild(track);
    row.appendChild(el("span", { class: "num" }, r.label));
    root.appendChild(row);
  }
}

function fillEngine(e) {
  setText("eng-rate", count(Math.round(e.events_per_second)), e.events_per_second);
  setText("eng-p50", ms(e.latency_p50_seconds), e.latency_p50_seconds);
  setText("eng-p99", ms(e.latency_p99_seconds), e.latency_p99_seconds);
  setText("eng-lag", count(e.lag_total), e.lag_total);
  setText("eng-committed", count(e.committed), e.committed);
  setText("eng-restarts", count(e.task_restarts), e.task_restarts);
  const lags = Object.entries(e.lag).map(([p, v]) => ({ p, v }));
  const maxLag = Math.max(1, ...lags.map((l) => l.v));
  bars("eng-partitions", lags.map((l) => ({ name: "partition " + l.p, value: l.v, fraction: l.v / maxLag, label: count(l.v) })));
  bars("eng-channels", Object.entries(e.channels).map(([name, c]) => ({
    name: name.replace(/_/g, " "), value: c.used, fraction: c.capacity ? c.used / c.capacity : 0, label: `${c.used}/${c.capacity}`, warn: true,
  })));
  const err = $("eng-error");
  err.textContent = e.last_error || "none";
  err.classList.toggle("has-error", Boolean(e.last_error));
}

// ---- loading ----------------------------------------------------------------------------
function fillStats(s) {
  setText("stat-events", count(s.events), s.events);
  setText("stat-listings", count(s.listings), s.listings);
  setText("stat-observations", count(s.observations), s.observations);
  setText("stat-drops", count(s.drops_today), s.drops_today);
  setText("stat-mean", money(s.mean_price), s.mean_price);
  setText("stat-min", money(s.min_price), s.min_price);
  setText("stat-max", money(s.max_price), s.max_price);
}

function fillEventFilter() {
  const select = $("event-filter");
  const keep = state.event;
  select.replaceChildren(el("option", { value: "" }, "All events"));
  for (const e of state.events) {
    select.appendChild(el("option", { value: e.event_id }, `${e.event_name} · ${e.venue}`));
  }
  select.value = state.events.some((e) => e.event_id === keep) ? keep : "";
  state.event = select.value;
}

/// The event the chart shows: the chosen one, or with "All events" the busiest.
function chartEvent() {
  if (state.event) return state.events.find((e) => e.event_id === state.event);
  return state.events.slice().sort((a, b) => b.observations - a.observations)[0];
}

async function refresh() {
  if (state.loading) return;
  state.loading = true;
  const banner = $("banner");
  try {
    state.events = await api("/api/events");
    fillEventFilter();
    writeUrl();
    const ev = chartEvent();
    const q = state.event ? "event_id=" + encodeURIComponent(state.event) : "";
    const [stats, alerts, engine, prices, windows] = await Promise.all([
      api("/api/stats?" + q),
      api(`/api/alerts?since=${state.range}&limit=200&` + q),
      api("/api/engine"),
      ev ? api(`/api/events/${encodeURIComponent(ev.event_id)}/prices?range=${state.range}`) : null,
      ev ? api(`/api/events/${encodeURIComponent(ev.event_id)}/windows?range=${state.range}`) : [],
    ]);
    fillStats(stats);
    fillDrops(alerts.filter((a) => a.alert_type === "price_drop"));
    fillEngine(engine);
    drawPriceChart(prices);
    drawHistogram(prices && prices.distribution);
    fillWindows(windows);
    const label = ev ? `· ${ev.event_name}${state.event ? "" : " (busiest; choose an event above)"} · ${state.range}` : "";
    $("chart-title").textContent = label;
    $("hist-title").textContent = ev ? `· ${ev.event_name} · ${state.range}` : "";
    $("drops-title").textContent = `· ${state.event ? ev.event_name : "all events"} · last ${state.range}`;
    $("chart-summary").textContent = prices
      ? `${count(prices.observations)} observations in ${prices.buckets.length} buckets of ${Math.round(prices.bucket_seconds / 60)} min`
      : "";
    $("chart-summary").dataset.value = prices ? String(prices.observations) : "0";
    banner.hidden = true;
    $("updated").textContent = "updated " + new Date().toLocaleTimeString("en-GB");
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded || 0) + 1);
  } catch (err) {
    banner.textContent = "Could not load data: " + err.message;
    banner.hidden = false;
  } finally {
    state.loading = false;
  }
}

function schedule() {
  clearInterval(state.timer);
  state.timer = $("auto-refresh").checked ? setInterval(refresh, REFRESH_MS) : null;
}

function markRange() {
  for (const b of document.querySelectorAll("#range-buttons button")) {
    b.classList.toggle("active", b.dataset.range === state.range);
    b.setAttribute("aria-pressed", String(b.dataset.range === state.range));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  readUrl();
  markRange();
  $("event-filter").addEventListener("change", (e) => {
    state.event = e.target.value;
    writeUrl();
    refresh();
  });
  for (const b of document.querySelectorAll("#range-buttons button")) {
    b.addEventListener("click", () => {
      state.range = b.dataset.range;
      markRange();
      writeUrl();
      refresh();
    });
  }
  $("auto-refresh").addEventListener("change", schedule);
  refresh();
  schedule();
});
