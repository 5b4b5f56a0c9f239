// The node dashboard: polls the node's /dashboard/data and draws its history as
// inline SVG charts. No dependencies, no build step. Everything shown goes into the
// page through textContent and attribute setters, never as markup.

const SVG = "http://www.w3.org/2000/svg";
const main = document.getElementById("dashboard");
const source = main.dataset.source;
const statusLine = document.getElementById("status");
const form = document.getElementById("login");
const tokenInput = document.getElementById("token");

const W = 360;
const H = 170;
const PAD = { left: 44, right: 8, top: 8, bottom: 22 };
const TABLE_ROWS = 10;

let samples = [];
let capacity = 600;
let taken = -1;
let timer = null;
let uid = 0;

// ---- token ------------------------------------------------------------------

const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
if (fromHash) {
  sessionStorage.setItem("hyperty-dashboard-token", fromHash);
  history.replaceState(null, "", location.pathname + location.search);
}
let token = sessionStorage.getItem("hyperty-dashboard-token") || "";

form.addEventListener("submit", (e) => {
  e.preventDefault();
  token = tokenInput.value.trim();
  sessionStorage.setItem("hyperty-dashboard-token", token);
  tokenInput.value = "";
  form.hidden = true;
  poll();
});

// ---- small DOM helpers ------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

// ---- number formats -----------------------------------------------------------

function num(v) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return `${(v / 1e9).toFixed(1)} G`;
  if (a >= 1e6) return `${(v / 1e6).toFixed(1)} M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(1)} K`;
  if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
  return v.toFixed(1);
}

function bytes(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 1 << 30) return `${(v / (1 << 30)).toFixed(1)} GiB`;
  if (v >= 1 << 20) return `${(v / (1 << 20)).toFixed(1)} MiB`;
  if (v >= 1 << 10) return `${(v / (1 << 10)).toFixed(1)} KiB`;
  return `${v} B`;
}

function micros(v) {
  if (v === null || v === undefined) return "–";
  if (v >= 1e6) return `${(v / 1e6).toFixed(2)} s`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(v >= 1e4 ? 0 : 1)} ms`;
  return `${Math.round(v)} µs`;
}

function clock(t) {
  return new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// A round upper bound for an axis and its number of divisions, so that every
// tick is a round number: at least 4, then 1, 2, 4, 5 or 10 times a power of ten.
function niceAxis(v) {
  if (!(v > 4)) return { top: 4, divisions: 4 };
  const p = 10 ** Math.floor(Math.log10(v));
  for (const [m, divisions] of [[1, 4], [2, 4], [4, 4], [5, 5], [10, 5]]) {
    if (v <= m * p) return { top: m * p, divisions };
  }
  return { top: 10 * p, divisions: 5 };
}

// ---- charts -------------------------------------------------------------------

// A line chart of `series` ([{key, label}]) over the samples, with a legend of the
// latest values and a table of the last samples as its text fallback.
function lineChart({ title, series, fmt }) {
  const id = nextId("chart");
  const xs = samples.map((s) => s.t);
  const t0 = xs.length ? xs[0] : 0;
  const t1 = xs.length ? xs[xs.length - 1] : 1;
  const span = Math.max(t1 - t0, 1);
  let max = 0;
  for (const s of samples) for (const { key } of series) if (s[key] > max) max = s[key];
  const { top, divisions } = niceAxis(max);
  const iw = W - PAD.left - PAD.right;
  const ih = H - PAD.top - PAD.bottom;
  const x = (t) => PAD.left + ((t - t0) / span) * iw;
  const y = (v) => PAD.top + ih - (v / top) * ih;

  const last = samples[samples.length - 1] || {};
  const latest = series.map(({ key, label }) => `${label} ${fmt(last[key])}`).join(", ");
  const minutes = Math.round(span / 60000);
  const desc = samples.length
    ? `Over the last ${minutes >= 1 ? `${minutes} min` : `${Math.round(span / 1000)} s`}; latest: ${latest}; peak ${fmt(max)}.`
    : "No samples yet.";
  const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-t ${id}-d` },
    svg("title", { id: `${id}-t` }, title),
    svg("desc", { id: `${id}-d` }, desc));
  for (let i = 0; i <= divisions; i += 1) {
    const v = (top * i) / divisions;
    chart.append(svg("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      svg("text", { x: PAD.left - 4, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  if (samples.length) {
    chart.append(svg("text", { x: PAD.left, y: H - 6 }, clock(t0)),
      svg("text", { x: W - PAD.right, y: H - 6, "text-anchor": "end" }, clock(t1)));
  }
  series.forEach(({ key }, i) => {
    let d = "";
    let pen = "M";
    for (const s of samples) {
      const v = s[key];
      if (v === null || v === undefined) { pen = "M"; continue; }
      d += `${pen}${x(s.t).toFixed(1)},${y(v).toFixed(1)} `;
      pen = "L";
    }
    if (d) chart.append(svg("path", { class: `line s${i}`, d }));
  });

  const legend = el("ul", { class: "legend" });
  series.forEach(({ label, key }, i) => {
    legend.append(el("li", {},
      svg("svg", { viewBox: "0 0 24 12", "aria-hidden": "true" },
        svg("line", { class: `line s${i}`, x1: 1, x2: 23, y1: 6, y2: 6 })),
      `${label}: ${fmt(last[key])}`));
  });
  return el("figure", { "aria-labelledby": `${id}-c` },
    el("figcaption", { id: `${id}-c` }, title), chart, legend,
    tableOf(title, samples.slice(-TABLE_ROWS).reverse(),
      [["time", (s) => clock(s.t)], ...series.map(({ key, label }) => [label, (s) => fmt(s[key])])]));
}

// Horizontal bars for current values: rows [{label, value, cls?, text?}].
function barChart({ title, rows, fmt, empty }) {
  const id = nextId("bars");
  const fig = el("figure", { "aria-labelledby": `${id}-c` }, el("figcaption", { id: `${id}-c` }, title));
  if (!rows.length) {
    fig.append(el("p", { class: "empty" }, empty || "Nothing to show."));
    return fig;
  }
  const rowH = 26;
  const labelW = 130;
  const h = rows.length * rowH + 4;
  const max = Math.max(...rows.map((r) => r.value), 1);
  const desc = rows.map((r) => `${r.label}: ${r.text ?? fmt(r.value)}`).join("; ");
  const chart = svg("svg", { viewBox: `0 0 ${W} ${h}`, role: "img", "aria-labelledby": `${id}-t ${id}-d` },
    svg("title", { id: `${id}-t` }, title), svg("desc", { id: `${id}-d` }, desc));
  const bw = W - labelW - 70;
  rows.forEach((r, i) => {
    const top = i * rowH + 2;
    const label = r.label.length > 22 ? `${r.label.slice(0, 21)}…` : r.label;
    chart.append(
      svg("text", { class: "label", x: 0, y: top + 16 }, label),
      svg("rect", { class: "bar-bg", x: labelW, y: top + 4, width: bw, height: 16, rx: 3 }),
      svg("rect", { class: r.cls || "s0", x: labelW, y: top + 4, width: Math.max((r.value / max) * bw, r.value > 0 ? 2 : 0), height: 16, rx: 3 }),
      svg("text", { class: "label", x: labelW + bw + 6, y: top + 16 }, r.text ?? fmt(r.value)));
  });
  fig.append(chart, tableOf(title, rows, [["", (r) => r.label], ["value", (r) => r.text ?? fmt(r.value)]]));
  return fig;
}

function tableOf(title, rows, columns) {
  const head = el("tr", {}, ...columns.map(([name]) => el("th", { scope: "col" }, name)));
  const body = rows.map((r) => el("tr", {}, ...columns.map(([, f]) => el("td", {}, f(r)))));
  return el("details", { "data-key": title }, el("summary", {}, `${title} as a table`),
    el("table", {}, el("thead", {}, head), el("tbody", {}, ...body)));
}

// ---- the page -------------------------------------------------------------------

function render(data) {
  const open = new Set([...main.querySelectorAll("details[open]")].map((d) => d.dataset.key));
  const last = samples[samples.length - 1] || {};
  document.getElementById("domain").textContent = data.domain;
  const t = data.totals;

  document.getElementById("now").replaceChildren(
    barChart({
      title: "Sessions and addresses",
      fmt: num,
      rows: [
        { label: "live sessions", value: last.live ?? 0 },
        { label: "sessions in grace", value: last.grace ?? 0, cls: "s1" },
        { label: "hyperties", value: last.hyperties ?? 0, cls: "s2" },
        { label: "addresses", value: last.addresses ?? 0, cls: "s3" },
        { label: "data objects", value: last.data_objects ?? 0, cls: "s2" },
        { label: "subscriptions", value: last.subscriptions ?? 0, cls: "s3" },
      ],
    }),
    barChart({
      title: "Frames since start",
      fmt: num,
      rows: [
        { label: "received", value: t.frames_in },
        { label: "sent", value: t.frames_out, cls: "s1" },
        { label: "delivered", value: t.delivered, cls: "s2" },
        { label: "dropped", value: t.dropped, cls: "s3" },
        { label: "errors", value: t.errors, cls: "s3" },
      ],
    }),
    lineChart({ title: "Sessions", fmt: num, series: [{ key: "live", label: "live" }, { key: "grace", label: "in grace" }] }),
  );

  document.getElementById("traffic").replaceChildren(
    lineChart({ title: "Frames per second", fmt: num, series: [{ key: "in_rate", label: "in" }, { key: "out_rate", label: "out" }] }),
    lineChart({
      title: "Deliveries and errors per second",
      fmt: num,
      series: [{ key: "delivered_rate", label: "delivered" }, { key: "dropped_rate", label: "dropped" }, { key: "error_rate", label: "errors" }],
    }),
    lineChart({ title: "Routing latency (sampled)", fmt: micros, series: [{ key: "routing_p50_us", label: "p50" }, { key: "routing_p99_us", label: "p99" }] }),
    lineChart({ title: "Request → response latency", fmt: micros, series: [{ key: "request_p50_us", label: "p50" }, { key: "request_p99_us", label: "p99" }] }),
  );

  document.getElementById("pressure").replaceChildren(
    lineChart({
      title: "Limits per second",
      fmt: num,
      series: [{ key: "rate_limited_rate", label: "rate-limited frames" }, { key: "throttled_rate", label: "senders paused" }, { key: "slow_consumers", label: "slow consumers evicted" }],
    }),
    lineChart({ title: "Outbound queues", fmt: bytes, series: [{ key: "queue_bytes", label: "all sessions" }, { key: "queue_max_bytes", label: "fullest session" }] }),
    barChart({
      title: "Largest outbound queues now",
      fmt: bytes,
      empty: "No session has frames waiting.",
      rows: data.backlog.map((b) => ({ label: b.runtime ?? "anonymous session", value: b.bytes, cls: "s1" })),
    }),
    barChart({
      title: "Refusals and evictions since start",
      fmt: num,
      rows: [
        { label: "rate-limited frames", value: t.rate_limited },
        { label: "senders paused", value: t.throttled, cls: "s1" },
        { label: "slow consumers", value: t.slow_consumers, cls: "s2" },
        { label: "abusive, closed", value: t.abusive, cls: "s3" },
      ],
    }),
  );

  const peers = data.peers || [];
  const section = document.getElementById("peers-section");
  section.hidden = peers.length === 0;
  if (peers.length) {
    document.getElementById("peers").replaceChildren(
      barChart({
        title: "Links to other domains",
        fmt: num,
        rows: peers.map((p) => ({ label: p.domain, value: Math.max(p.queued, 1), cls: p.state, text: `${p.state}, ${p.queued} waiting` })),
      }),
      lineChart({ title: "Peer links", fmt: num, series: [{ key: "peers_up", label: "up" }, { key: "peers_down", label: "down" }] }),
    );
  }
  for (const d of main.querySelectorAll("details")) if (open.has(d.dataset.key)) d.open = true;
}

async function poll() {
  clearTimeout(timer);
  const since = samples.length ? `?since=${samples[samples.length - 1].t}` : "";
  let wait = 1000;
  try {
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const resp = await fetch(source + since, { headers, cache: "no-store" });
    if (resp.status === 401) {
      main.hidden = true;
      form.hidden = false;
      statusLine.textContent = token ? "The token was refused." : "A token is needed.";
      return;
    }
    if (!resp.ok) throw new Error(`${resp.status} ${resp.statusText}`);
    const data = await resp.json();
    if (data.taken < taken) samples = []; // the node restarted
    taken = data.taken;
    capacity = data.capacity;
    wait = Math.max(data.interval_ms, 500);
    samples = samples.concat(data.samples).slice(-capacity);
    main.hidden = false;
    render(data);
    statusLine.textContent = `Updated ${clock(data.now)} · one sample every ${num(data.interval_ms / 1000)} s, ${samples.length} kept`;
  } catch (e) {
    statusLine.textContent = `Cannot reach the node (${e.message}); retrying.`;
    wait = 5000;
  }
  timer = setTimeout(poll, wait);
}

poll();
