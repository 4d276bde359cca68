// Airlock console: draws the charts and refreshes a router's live status. Served from
// /ui/assets (the CSP allows no inline script). Every value from the server is put into the
// page with textContent, never as HTML.
"use strict";

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

async function getJSON(url) {
  const resp = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
  if (!resp.ok) throw new Error(url + ": " + resp.status);
  return resp.json();
}

// x: day labels ("2026-12-05") or hour starts (seconds). Stacked: each series is drawn as the
// sum of itself and the ones before it, the largest first, so the bands stack.
function drawChart(el, data) {
  const xs = data.x.map((v) => (typeof v === "string" ? Date.parse(v + "T00:00:00Z") / 1000 : v));
  if (xs.length === 0) {
    el.textContent = "no data yet";
    el.classList.add("empty");
    return;
  }
  const stacked = !(data.series.length === 2 && data.series[0].label === "errors");
  const sums = [];
  let run = xs.map(() => 0);
  for (const s of data.series) {
    run = run.map((v, i) => v + s.values[i]);
    sums.push(stacked ? run.slice() : s.values.slice());
  }
  const order = data.series.map((s, i) => i).reverse();
  const bars = uPlot.paths && uPlot.paths.bars ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined;
  const series = [{}];
  const values = [xs];
  for (const i of order) {
    const color = COLORS[i % COLORS.length];
    series.push({
      label: data.series[i].label,
      stroke: color,
      fill: stacked ? color + "cc" : undefined,
      paths: stacked ? bars : undefined,
      points: { show: xs.length < 3 },
      value: (u, v, si, di) => (di == null ? "" : String(data.series[i].values[di])),
    });
    values.push(sums[i]);
  }
  // Half a step of room on each side, so one day (or hour) of data is a bar, not a sliver.
  const step = typeof data.x[0] === "string" ? 86400 : 3600;
  const range = [xs[0] - step, xs[xs.length - 1] + step];
  // Small amounts (a cent and less) keep their significant digits on the axis.
  const tick = (u, splits) => splits.map((v) => (v !== 0 && Math.abs(v) < 0.01 ? String(Number(v.toPrecision(2))) : String(v)));
  const width = Math.max(260, el.clientWidth || 600);
  el.textContent = "";
  new uPlot(
    {
      width: width,
      height: 220,
      series: series,
      scales: { x: { time: true, range: () => range } },
      axes: [{}, { values: tick, size: 76 }],
    },
    values,
    el
  );
}

function loadCharts() {
  for (const el of document.querySelectorAll("[data-chart]")) {
    getJSON(el.dataset.chart)
      .then((data) => drawChart(el, data))
      .catch((err) => {
        el.textContent = "chart unavailable (" + err.message + ")";
      });
  }
}

function utc(ms) {
  return ms == null ? "—" : new Date(ms).toISOString().replace("T", " ").slice(0, 19);
}

function fillRows(tbody, rows) {
  tbody.textContent = "";
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const value of row) {
      const td = document.createElement("td");
      td.textContent = value == null ? "—" : String(value);
      tr.appendChild(td);
    }
    tbody.appendChild(tr);
  }
}

function refreshLive(section) {
  const status = section.querySelector("#live-status");
  getJSON(section.dataset.live)
    .then((data) => {
      fillRows(
        section.querySelector("#live-backends tbody"),
        data.backends.map((b) => [
          b.name,
          b.gateway,
          b.healthy ? "yes" : "no",
          b.cooldown_until_ms && b.cooldown_until_ms > data.now_ms ? utc(b.cooldown_until_ms) : "—",
          b.latency_ewma_ms == null ? "—" : Math.round(b.latency_ewma_ms),
          b.requests_last_minute + " / " + b.errors_last_minute,
        ])
      );
      fillRows(
        section.querySelector("#routing-log tbody"),
        data.decisions.map((d) => [
          utc(d.time_ms),
          d.model_requested,
          (d.provider || "") + " " + (d.model || ""),
          d.attempts.map((a) => a.backend + ":" + a.outcome).join(", "),
          d.reason,
          d.elapsed_ms,
        ])
      );
      status.textContent = "updated " + utc(data.now_ms) + " UTC, every 3 s";
    })
    .catch((err) => {
      status.textContent = "live status unavailable (" + err.message + ")";
    });
}

document.addEventListener("DOMContentLoaded", () => {
  loadCharts();
  const live = document.querySelector("[data-live]");
  if (live) {
    refreshLive(live);
    setInterval(() => refreshLive(live), 3000);
  }
});
