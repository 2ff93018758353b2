// The pipeline page: polls /api/pipeline, fills the figures (textContent only), draws two uPlot charts.
"use strict";

(function () {
  const { $, count, utcClock, status } = dashboard;
  let charts = null;
  let filled = false; // the first poll's figures are on the page (marked once, for the timing test)

  const perSecond = (n) => n.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 }) + " /s";
  const ms = (n) => (n >= 1000 ? (n / 1000).toFixed(2) + " s" : n.toFixed(0) + " ms");
  const seconds = (n) => (n >= 120 ? (n / 60).toFixed(1) + " min" : n.toFixed(1) + " s");
  const bytes = (n) => {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
    return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
  };

  // A figure: its value formatted, or the reason it has none (shown plainly, marked unavailable).
  function show(id, value, format, missing) {
    const el = $(id);
    const known = value !== null && value !== undefined;
    el.textContent = known ? format(value) : missing;
    el.classList.toggle("unavailable", !known && missing.startsWith("unavailable"));
    el.classList.toggle("none", !known && !missing.startsWith("unavailable"));
  }

  function renderSources(sources) {
    const list = $("sources");
    list.replaceChildren();
    const byKey = {};
    for (const source of sources) {
      byKey[source.key] = source;
      const item = document.createElement("li");
      item.dataset.source = source.key;
      item.dataset.ok = source.ok === null ? "unknown" : String(source.ok);
      let text = source.label + ": ";
      if (source.ok === null) text += "waiting for the first poll";
      else if (source.ok) text += "ok";
      else text += "unreachable — " + source.error + (source.last_ok ? " (last answer " + utcClock(source.last_ok) + " UTC)" : "");
      item.append(document.createTextNode(text));
      const where = document.createElement("span");
      where.className = "where";
      where.textContent = source.where;
      item.append(where);
      list.append(item);
    }
    return byKey;
  }

  // Why a figure is missing: its source is down, or it needs a second scrape.
  function reason(sources, keys, fallback) {
    const down = keys.map((key) => sources[key]).filter((s) => s && s.ok === false);
    if (down.length && down.length === keys.filter((key) => sources[key]).length) return "unavailable: " + down.map((s) => s.label).join(", ") + " down";
    return fallback;
  }

  function render(view) {
    const started = performance.now();
    const sources = renderSources(view.sources);
    const consumers = view.sources.filter((s) => s.key.startsWith("consumer-")).map((s) => s.key);
    const t = view.throughput;
    const waiting = "collecting…";
    show("in-rate", t.in_per_s, perSecond, reason(sources, ["receiver"], waiting));
    show("written-rate", t.written_per_s, perSecond, reason(sources, consumers, waiting));
    show("accepted-total", t.accepted_total, count, reason(sources, ["receiver"], waiting));
    show("written-total", t.written_total, count, reason(sources, consumers, waiting));
    show("files-total", t.files_total, count, reason(sources, consumers, waiting));

    const l = view.latency;
    const noReadings = l.count === 0 ? "no readings written in the window" : waiting;
    const latencyMissing = reason(sources, consumers, noReadings);
    // Beyond the histogram's last bound a percentile is only known to exceed it.
    for (const key of ["p50", "p95", "p99"]) {
      const floor = l[key + "_ms_is_floor"] ? "> " : "";
      show("latency-" + key, l[key + "_ms"], (v) => floor + ms(v), latencyMissing);
    }
    show("latency-count", l.count, count, latencyMissing);

    const q = view.queue;
    const queueMissing = reason(sources, ["sqs"], waiting);
    $("queue-name").textContent = q ? q.name : "";
    $("dlq-name").textContent = q && q.dlq_name ? q.dlq_name : "";
    show("queue-visible", q && q.visible, count, queueMissing);
    show("queue-in-flight", q && q.in_flight, count, queueMissing);
    show("queue-delayed", q && q.delayed, count, queueMissing);
    show("dlq-visible", q && q.dlq_visible, count, q ? "no dead-letter queue" : queueMissing);
    let drain = null;
    let drainMissing = queueMissing;
    if (q) {
      drain = q.drain_s;
      drainMissing = q.deleted_per_s === 0 ? "not draining: no message finished" : "unknown (no consumer rate)";
    }
    show("queue-drain", drain, seconds, drainMissing);

    const f = view.files;
    show("files-hour", f && f.hour, (v) => v, reason(sources, ["disk"], waiting));
    show("files-count", f && f.files, count, reason(sources, ["disk"], waiting));
    show("files-bytes", f && f.bytes, bytes, reason(sources, ["disk"], waiting));

    show("uploads-pending", view.uploads.pending, count, reason(sources, consumers, "S3 tier off (no consumer reports uploads)"));
    show("unflushed", view.uploads.unflushed, count, reason(sources, consumers, waiting));

    const body = $("errors");
    body.replaceChildren();
    for (const row of view.errors.rows) {
      const tr = document.createElement("tr");
      if (row.in_window) tr.className = "bad";
      for (const [text, numeric] of [[row.label, false], [row.total === null ? "—" : count(row.total), true], [row.in_window === null ? "—" : count(row.in_window), true]]) {
        const td = document.createElement("td");
        td.textContent = text;
        if (numeric) td.className = "n";
        tr.append(td);
      }
      body.append(tr);
    }
    if (!view.errors.rows.length) {
      const tr = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = 3;
      td.textContent = "no source reachable yet";
      tr.append(td);
      body.append(tr);
    }

    drawCharts(view.history);
    const down = view.sources.filter((s) => s.ok === false).length;
    const when = view.polled_at ? "polled " + utcClock(view.polled_at) + " UTC" : "waiting for the first poll";
    status(when + ", every " + view.refresh_s + " s; window " + Math.round(view.covered_s) + " of " + view.window_s + " s" + (down ? "; " + down + " source(s) down" : ""), down ? "degraded" : "ok");
    if (!filled && view.polled_at) {
      filled = true;
      performance.mark("pipeline-figures-filled");
      performance.measure("pipeline-first-render", { start: started, end: performance.now() });
    }
  }

  function chart(target, series, yLabel) {
    const width = Math.max(300, target.clientWidth - 10);
    const options = {
      width: width,
      height: 220,
      scales: { x: { time: true } },
      series: [{}].concat(series.map(([label, stroke]) => ({ label: label, stroke: stroke, width: 2, spanGaps: false, points: { show: false } }))),
      axes: [{}, { label: yLabel, size: 60 }],
    };
    return new uPlot(options, [[]].concat(series.map(() => [])), target);
  }

  function drawCharts(history) {
    if (typeof uPlot === "undefined") return;
    if (charts === null) {
      charts = {
        rate: chart($("chart-rate"), [["in (receiver)", "#1f77b4"], ["written (consumers)", "#2c7a3f"]], "readings/s"),
        queue: chart($("chart-queue"), [["waiting", "#1f77b4"], ["in flight", "#ff7f0e"], ["dead letters", "#b3261e"]], "messages"),
      };
      window.addEventListener("resize", () => {
        for (const [key, id] of [["rate", "chart-rate"], ["queue", "chart-queue"]]) {
          charts[key].setSize({ width: Math.max(300, $(id).clientWidth - 10), height: 220 });
        }
      });
    }
    charts.rate.setData([history.t, history.in_per_s, history.written_per_s]);
    charts.queue.setData([history.t, history.visible, history.in_flight, history.dlq]);
  }

  dashboard.poll("/api/pipeline", render);
})();
