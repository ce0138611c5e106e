// streamml dashboard: polls /api/state and redraws small SVG line charts and tables. No dependencies.
"use strict";
(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#bf8700", "#8250df", "#57606a", "#e16f24", "#1b7c83"];
  const QUALITY = [["accuracy", "Accuracy"], ["precision", "Precision"], ["recall", "Recall"], ["f1", "F1"],
    ["roc_auc", "ROC AUC"], ["pr_auc", "PR AUC"]];
  const REFRESH_MS = Number(new URLSearchParams(location.search).get("refresh")) || 2000;
  const $ = (id) => document.getElementById(id);
  let last = null;

  // ---- DOM helpers ----
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }
  function svg(tag, attrs = {}, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  const pad = (n) => String(n).padStart(2, "0");
  function fmtTime(ms) {
    const d = new Date(ms);
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }
  function fmtNum(v, digits = 3) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (Number.isInteger(v)) return v.toLocaleString();
    return Math.abs(v) >= 100 ? v.toFixed(0) : v.toPrecision(digits);
  }
  function niceTicks(lo, hi, count) {
    const step0 = (hi - lo) / count;
    const mag = 10 ** Math.floor(Math.log10(step0));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= step0);
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
    return ticks;
  }

  // ---- line chart ----
  // series: [{label, color, points: [[x, y|null], ...]}], markers: [{x, label}], opts: {yMin, yMax, threshold}
  function lineChart(key, title, series, markers = [], opts = {}) {
    const W = 380, H = 190, L = 46, R = 12, T = 16, B = 22;
    const pts = series.flatMap((s) => s.points.filter((p) => p[1] !== null));
    const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, "data-chart": key,
      "data-points": pts.length, role: "img", "aria-label": title });
    const card = el("div", { class: "card" }, el("h3", {}, title), root);
    if (!pts.length) {
      root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
      return card;
    }
    let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
    const shown = markers.filter((m) => m.x >= x0);
    x1 = Math.max(x1, ...shown.map((m) => m.x));
    if (x1 === x0) { x0 -= 1000; x1 += 1000; }
    let y0 = opts.yMin ?? Math.min(0, ...pts.map((p) => p[1]));
    let y1 = opts.yMax ?? Math.max(...pts.map((p) => p[1]), opts.threshold ?? -Infinity) * 1.1;
    if (y1 <= y0) y1 = y0 + 1;
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    for (const t of niceTicks(y0, y1, 4)) {
      root.append(svg("line", { class: "grid-line", x1: L, x2: W - R, y1: sy(t), y2: sy(t) }));
      root.append(svg("text", { x: L - 4, y: sy(t) + 3, "text-anchor": "end" }, fmtNum(t, 2)));
    }
    for (let i = 0; i <= 3; i++) {
      const x = x0 + ((x1 - x0) * i) / 3;
      root.append(svg("text", { x: sx(x), y: H - 6, "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle" },
        fmtTime(x)));
    }
    root.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    root.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    if (opts.threshold !== undefined) {
      root.append(svg("line", { class: "threshold", x1: L, x2: W - R, y1: sy(opts.threshold), y2: sy(opts.threshold) }));
    }
    for (const s of series) {
      let d = "", pen = "M";
      for (const [x, y] of s.points) {
        if (y === null) { pen = "M"; continue; }
        d += `${pen}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`;
        pen = "L";
      }
      if (!d) continue;
      root.append(svg("path", { class: "series", d, stroke: s.color, "data-series": s.label }));
      const [lx, ly] = s.points.filter((p) => p[1] !== null).at(-1);
      root.append(svg("circle", { cx: sx(lx), cy: sy(ly), r: 2.5, fill: s.color }));
    }
    for (const m of shown) {
      const g = svg("g", { class: "marker", "data-label": m.label });
      g.append(svg("line", { x1: sx(m.x), x2: sx(m.x), y1: T, y2: H - B }));
      const right = sx(m.x) > W - 80;
      g.append(svg("text", { x: sx(m.x) + (right ? -3 : 3), y: T + 8, "text-anchor": right ? "end" : "start" }, m.label));
      root.append(g);
    }
    card.append(el("div", { class: "legend" }, ...series.map((s) =>
      el("span", {}, el("i", { style: `background:${s.color}` }), s.label))));
    return card;
  }

  // ---- sections ----
  const versionLabel = (v) => `v${v.version}` + (v.role && v.role !== "live" ? ` (${v.role})` : "");
  const versionSeries = (model, field) => model.versions.map((v, i) => ({
    label: versionLabel(v), color: COLORS[i % COLORS.length],
    points: v.windows.map((w) => [w.window_end_ms, w[field]]),
  }));
  const markersOf = (model) => (model ? model.markers.map((m) => ({ x: m.time_ms, label: m.label })) : []);

  function renderQuality(model) {
    const charts = QUALITY.map(([field, title]) =>
      lineChart(field, title, versionSeries(model, field), markersOf(model), { yMin: 0, yMax: 1 }));
    charts.push(lineChart("count", "Records per window", versionSeries(model, "count"), markersOf(model)));
    $("quality").replaceChildren(...charts);
  }

  function renderDrift(model, threshold) {
    $("drift-chart").replaceChildren(lineChart("drift_psi_max", "Largest feature PSI per window",
      versionSeries(model, "drift_psi_max"), markersOf(model), { threshold }));
    const versions = model.versions.filter((v) => Object.keys(v.features).length);
    const names = [...new Set(versions.flatMap((v) => Object.keys(v.features)))].sort();
    const top = Math.max(threshold * 2, ...versions.flatMap((v) => Object.values(v.features).map((f) => f.psi ?? 0)));
    const cell = (f) => {
      if (!f) return el("td", { class: "num" }, "–");
      const cls = f.drifted ? "bar drifted" : "bar";
      return el("td", {}, el("span", { class: cls, style: `width:${Math.round((80 * (f.psi ?? 0)) / top)}px` }),
        fmtNum(f.psi));
    };
    const head = el("tr", {}, el("th", {}, "feature"), ...versions.map((v) =>
      el("th", {}, `PSI ${versionLabel(v)} @ ${fmtTime(v.features_window_end_ms)}`)));
    const rows = names.map((n) => el("tr", {}, el("td", {}, n), ...versions.map((v) => cell(v.features[n]))));
    $("drift-table").replaceChildren(el("div", { class: "card" }, el("h3", {}, "PSI per feature, latest window"),
      names.length ? el("table", { id: "psi" }, head, ...rows) : el("p", { class: "muted" }, "no drift data yet")));
  }

  function renderOps(state, model) {
    const queries = Object.keys(state.ops);
    const series = (field, suffix = "") => queries.map((q, i) => ({
      label: q + suffix, color: COLORS[i % COLORS.length], points: state.ops[q].map((s) => [s.time_ms, s[field]]),
    }));
    const latency = ["p50", "p95", "p99"].flatMap((p, j) => series(`latency_${p}_ms`, ` ${p}`).map((s, i) => (
      { ...s, color: COLORS[(i * 3 + j) % COLORS.length] })));
    const markers = markersOf(model);
    $("ops").replaceChildren(
      lineChart("rate_in", "Throughput (records/s)", series("rate_in"), markers),
      lineChart("lag", "Consumer lag (records)", series("lag"), markers),
      lineChart("latency", "End-to-end latency (ms)", latency, markers),
      lineChart("dead_letters", "Dead letters (total)", series("dead_letters"), markers));
    table("queries", ["query", "worker", "state", "records in", "records out", "records/s", "lag", "dead letters",
      "p50 ms", "p95 ms", "p99 ms", "models"], state.queries.map((q) => [q.query, q.worker,
      q.alive ? q.state : `NOT RUNNING (was ${q.state})`, q.records_in, q.records_out, q.rate_in, q.lag,
      q.dead_letters, q.latency_p50_ms, q.latency_p95_ms, q.latency_p99_ms,
      Object.entries(q.model_versions).map(([k, v]) => `${k} → ${v}`).join(", ")]), "no workers running");
  }

  function table(id, headers, rows, empty) {
    const body = rows.map((r) => el("tr", {}, ...r.map((v) => v instanceof Node ? el("td", {}, v)
      : el("td", typeof v === "number" ? { class: "num" } : {}, fmtNum(v)))));
    const node = $(id);
    node.replaceChildren(el("tr", {}, ...headers.map((h) => el("th", {}, h))), ...body);
    if (!rows.length) node.append(el("tr", {}, el("td", { colspan: headers.length, class: "muted" }, empty)));
  }
  const badge = (text, cls) => el("span", { class: `badge ${cls}` }, text);

  function renderAlerts(state) {
    $("firing").replaceChildren(...(state.firing.length
      ? state.firing.map((a) => badge(`FIRING ${a.model} v${a.version} ${a.rule}`, "FIRING"))
      : [el("span", { class: "muted" }, "no alert firing")]));
    table("alerts", ["window end", "model", "version", "rule", "value", "threshold", "state", "message"],
      state.alerts.map((a) => [fmtTime(a.window_end_ms), a.model, a.version, a.rule, a.value, a.threshold,
        badge(a.state, a.state), a.message]), "no alerts");
  }

  function renderEvents(state) {
    table("events", ["time", "action", "model", "version", "alias", "previous", "detail"],
      state.events.map((e) => [e.time_ms ? new Date(e.time_ms).toLocaleString() : "–", e.action, e.model,
        e.version, e.alias, e.previous_version, e.detail]), "no model events");
  }

  function render(state) {
    const select = $("model");
    const names = state.models.map((m) => m.model);
    const chosen = names.includes(select.value) ? select.value : names[0];
    select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
    if (chosen) select.value = chosen;
    const model = state.models.find((m) => m.model === chosen) ?? { versions: [], markers: [] };
    renderQuality(model);
    renderDrift(model, state.thresholds.psi);
    renderOps(state, model);
    renderAlerts(state);
    renderEvents(state);
    $("errors").replaceChildren(...Object.entries(state.errors).map(([t, e]) => el("div", {}, `${t}: ${e}`)));
  }

  async function poll() {
    try {
      const response = await fetch("/api/state", { cache: "no-store" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      last = await response.json();
      render(last);
      $("status").textContent = `updated ${fmtTime(Date.now())}`;
      document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
    } catch (err) {
      $("status").textContent = `cannot reach the dashboard server (${err.message}); retrying`;
    }
    setTimeout(poll, REFRESH_MS);
  }
  $("model").addEventListener("change", () => last && render(last));
  poll();
})();
