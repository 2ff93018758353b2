// The vehicle page: draws the JSON the server embedded (#vehicle-data), refetches /api/vehicles/<id> for live windows.
// Text goes in with textContent only; charts are uPlot, min/max bands per signal, charging sessions shaded.
"use strict";

(function () {
  const { DASH, $, count, fixed, status } = dashboard;
  const CHARGING = "rgba(44, 122, 63, 0.14)";
  const charts = {};
  let sessions = [];
  let windowRange = [0, 1];
  let drawnOnce = false;

  const utcDate = (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC");
  const unix = (iso) => Date.parse(iso) / 1000;
  const hhmm = (iso) => (iso ? iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", "") : DASH);

  function message(text, kind) {
    const el = $("message");
    el.hidden = !text;
    el.textContent = text || "";
    el.dataset.kind = kind || "";
  }

  function markWindow(view) {
    const label = view && view.window ? view.window.label : null;
    for (const a of document.querySelectorAll("nav.windows a[data-window]")) {
      if (a.dataset.window === label) a.setAttribute("aria-current", "true");
      else a.removeAttribute("aria-current");
    }
    if (view && view.window) {
      $("range-from").value = view.window.from.slice(0, 19);
      $("range-to").value = view.window.to.slice(0, 19);
    }
  }

  // Shades each charging session over the plot area, under the series.
  function shadeSessions(u) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.fillStyle = CHARGING;
    for (const [start, end] of sessions) {
      const x0 = Math.max(left, u.valToPos(start, "x", true));
      const x1 = Math.min(left + width, u.valToPos(end, "x", true));
      if (x1 > x0) ctx.fillRect(x0, top, Math.max(1, x1 - x0), height);
    }
    ctx.restore();
  }

  // A chart of [label, column, colour, scale] lines; each [max, min] pair of columns is filled between (a band).
  function lineChart(target, lines, axes, bands) {
    const width = Math.max(300, target.clientWidth - 10);
    const options = {
      width: width,
      height: 220,
      tzDate: utcDate,
      scales: { x: { time: true, range: () => windowRange } },
      series: [{ label: "time (UTC)" }].concat(lines.map(([label, , stroke, scale, dash]) => ({
        label: label, stroke: stroke, width: 1.5, scale: scale, spanGaps: false, dash: dash, points: { show: false },
      }))),
      bands: bands.map(([hi, lo, fill]) => ({ series: [hi, lo], fill: fill })),
      axes: [{}].concat(axes.map(([scale, label, side]) => ({ scale: scale, label: label, side: side, size: 60, grid: { show: side === 3 } }))),
      hooks: { drawClear: [shadeSessions] },
    };
    const chart = new uPlot(options, [[]].concat(lines.map(() => [])), target);
    chart.columns = lines.map(([, column]) => column);
    return chart;
  }

  function makeCharts() {
    charts.soc = lineChart($("chart-soc"),
      [["SOC max", "battery_soc_max", "#1f77b4", "pct"], ["SOC min", "battery_soc_min", "#1f77b4", "pct"]],
      [["pct", "%", 3]], [[1, 2, "rgba(31,119,180,0.2)"]]);
    charts.pack = lineChart($("chart-pack"),
      [["voltage max", "battery_voltage_max", "#6a3d9a", "V"], ["voltage min", "battery_voltage_min", "#6a3d9a", "V"],
        ["current max", "battery_current_max", "#ff7f0e", "A"], ["current min", "battery_current_min", "#ff7f0e", "A"]],
      [["V", "V", 3], ["A", "A", 1]], [[1, 2, "rgba(106,61,154,0.2)"], [3, 4, "rgba(255,127,14,0.2)"]]);
    charts.cells = lineChart($("chart-cells"),
      [["cell max (max)", "cell_voltage_max_max", "#d62728", "V"], ["cell max (min)", "cell_voltage_max_min", "#d62728", "V"],
        ["cell min (max)", "cell_voltage_min_max", "#1f77b4", "V"], ["cell min (min)", "cell_voltage_min_min", "#1f77b4", "V"],
        ["spread max", "cell_voltage_spread_mv_max", "#555", "mV", [4, 3]]],
      [["V", "V", 3], ["mV", "spread mV", 1]], [[1, 2, "rgba(214,39,40,0.2)"], [3, 4, "rgba(31,119,180,0.2)"]]);
    charts.temp = lineChart($("chart-temp"),
      [["hottest (max)", "cell_temp_max_max", "#d62728", "C"], ["hottest (min)", "cell_temp_max_min", "#d62728", "C"],
        ["coldest (max)", "cell_temp_min_max", "#1f77b4", "C"], ["coldest (min)", "cell_temp_min_min", "#1f77b4", "C"]],
      [["C", "°C", 3]], [[1, 2, "rgba(214,39,40,0.2)"], [3, 4, "rgba(31,119,180,0.2)"]]);
    charts.health = new uPlot({
      width: Math.max(300, $("chart-health").clientWidth - 10),
      height: 160,
      tzDate: utcDate,
      // A single day still gets a day either side, not an axis of years.
      scales: { x: { time: true, range: (u, min, max) => (min !== null && min === max ? [min - 86400, max + 86400] : [min, max]) } },
      series: [{ label: "day" },
        { label: "SOH %", stroke: "#2c7a3f", width: 2, scale: "pct", points: { show: true } },
        { label: "R25 mΩ", stroke: "#b3261e", width: 2, scale: "mohm", points: { show: true } }],
      axes: [{}, { scale: "pct", label: "SOH %", size: 50 }, { scale: "mohm", label: "mΩ", side: 1, size: 50, grid: { show: false } }],
    }, [[], [], []], $("chart-health"));
    window.addEventListener("resize", () => {
      for (const [key, id] of [["soc", "chart-soc"], ["pack", "chart-pack"], ["cells", "chart-cells"], ["temp", "chart-temp"], ["health", "chart-health"]]) {
        charts[key].setSize({ width: Math.max(300, $(id).clientWidth - 10), height: key === "health" ? 160 : 220 });
      }
    });
  }

  function drawSignals(signals) {
    const columns = signals ? signals.columns : null;
    for (const key of ["soc", "pack", "cells", "temp"]) {
      const chart = charts[key];
      const data = [columns ? columns.t : []].concat(chart.columns.map((c) => (columns ? columns[c] : [])));
      chart.setData(data, false);
      chart.setScale("x", { min: windowRange[0], max: windowRange[1] });
      chart.root.parentElement.dataset.points = String(signals ? signals.points : 0);
      chart.root.parentElement.dataset.sessions = String(sessions.length);
    }
  }

  function renderAlerts(alerts) {
    const list = $("vehicle-alerts");
    list.replaceChildren();
    $("alerts-box").hidden = !alerts.length;
    for (const alert of alerts) {
      const item = document.createElement("li");
      item.dataset.kind = alert.kind;
      item.dataset.severity = alert.severity;
      const head = document.createElement("strong");
      head.textContent = alert.kind + " (" + alert.severity + ")";
      item.append(head);
      const days = alert.days || [];
      const since = " since " + hhmm(alert.first_seen) + " UTC; raised on " + days.length + " day(s), last " + (days[days.length - 1] || DASH);
      item.append(document.createTextNode(since));
      const evidence = document.createElement("span");
      evidence.className = "evidence";
      evidence.textContent = JSON.stringify(alert.evidence || {});
      item.append(evidence);
      list.append(item);
    }
  }

  function row(cells) {
    const tr = document.createElement("tr");
    for (const text of cells) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.append(td);
    }
    return tr;
  }

  function renderSessions(list) {
    const body = $("sessions");
    body.replaceChildren();
    for (const s of list) {
      const open = (s.open_start ? "… " : "") + hhmm(s.start);
      body.append(row([open, hhmm(s.end) + (s.open_end ? " …" : ""), fixed(s.soc_from, 1) + " → " + fixed(s.soc_to, 1) + " %", fixed(s.energy_kwh, 2), fixed(s.peak_power_kw, 1)]));
    }
    if (!list.length) body.append(row(["no charging session in this window's aggregated hours", "", "", "", ""]));
  }

  function renderHealth(health) {
    const body = $("health");
    body.replaceChildren();
    for (let i = health.day.length - 1; i >= 0; i -= 1) {
      body.append(row([health.day[i], fixed(health.capacity_ah[i], 2), fixed(health.soh_pct[i], 1), fixed(health.resistance_mohm_25c[i], 1)]));
    }
    if (!health.day.length) body.append(row(["no fleet-health document names this vehicle", "", "", ""]));
    const days = health.day.map((d) => unix(d + "T00:00:00Z"));
    charts.health.setData([days, health.soh_pct, health.resistance_mohm_25c]);
  }

  function renderProblems(problems) {
    const list = $("problems");
    list.replaceChildren();
    list.hidden = !problems.length;
    for (const problem of problems) {
      const item = document.createElement("li");
      item.textContent = problem;
      list.append(item);
    }
  }

  function summary(view) {
    const s = view.signals;
    if (!s) return "The readings could not be read (see below).";
    const how = s.mode === "raw" ? "every reading" : "min/max per " + s.bucket_s.toFixed(1) + " s bucket";
    const from = [];
    if (s.curated_hours.length) from.push(s.curated_hours.length + " curated hour(s)");
    if (s.raw_hours.length) from.push(s.raw_hours.length + " hour(s) from " + count(s.raw_files) + " raw file(s): " + s.raw_hours.join(", "));
    return count(s.readings) + " readings, " + count(s.points) + " points (" + how + ") from " + (from.join(" + ") || "no data files") + "; " + view.sessions.length + " charging session(s).";
  }

  function render(view) {
    if (typeof uPlot === "undefined") {
      status("The chart library did not load.", "error");
      return;
    }
    if (!charts.soc) makeCharts();
    markWindow(view);
    if (view.pending) {
      status("Reading this window's data…", "loading");
      return;
    }
    if (view.error) {
      message(view.error, "error");
      status("HTTP " + view.status + ": " + view.error, "error");
      document.body.dataset.drawn = "error";
      return;
    }
    windowRange = [unix(view.window.from), unix(view.window.to)];
    sessions = view.sessions.map((s) => [unix(s.start), unix(s.end)]);
    renderAlerts(view.alerts);
    renderSessions(view.sessions);
    renderHealth(view.health);
    renderProblems(view.problems);
    drawSignals(view.signals);
    message(view.message, view.signals && view.signals.readings === 0 && !view.message.startsWith("No vehicle") ? "empty" : "error");
    $("summary").textContent = summary(view);
    const span = hhmm(view.window.from) + " – " + hhmm(view.window.to) + " UTC";
    status(span + (view.refresh_s ? ", refreshed every " + view.refresh_s + " s" : "") + "; generated " + hhmm(view.generated_at), view.problems.length ? "degraded" : "ok");
    document.body.dataset.drawn = "true";
    if (!drawnOnce) {
      drawnOnce = true;
      performance.mark("vehicle-charts-drawn");
    }
  }

  // Fetches the window again after delayS; goes on only for a window that ends now (or after a failure).
  function refresh(delayS) {
    const api = "/api/vehicles/" + encodeURIComponent($("vehicle-id").textContent) + location.search;
    dashboard.poll(api, (view) => {
      render(view);
      return Boolean(view.refresh_s);
    }, { handled: [400, 404], firstDelayS: delayS, retryS: 5 });
  }

  $("range-show").addEventListener("click", () => {
    const from = $("range-from").value;
    const to = $("range-to").value;
    if (!from || !to) {
      message("Give both a start and an end.", "error");
      return;
    }
    const params = new URLSearchParams({ from: from + (from.length === 16 ? ":00" : "") + "Z", to: to + (to.length === 16 ? ":00" : "") + "Z" });
    location.assign(location.pathname + "?" + params.toString());
  });

  let view;
  try {
    view = JSON.parse($("vehicle-data").textContent);
  } catch (err) {
    status("The page's data could not be read (" + err.message + ")", "error");
    return;
  }
  render(view);
  if (view.pending) refresh(0);
  else if (view.refresh_s) refresh(view.refresh_s);
})();
