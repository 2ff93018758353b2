// The fleet page: polls /api/fleet (?hour= from the page's URL), one table row per vehicle kept and
// updated in place (textContent only), sorted by any column and filtered without refetching; the alerts beside.
"use strict";

(function () {
  const hour = new URLSearchParams(window.location.search).get("hour");
  const API = "/api/fleet" + (hour ? "?hour=" + encodeURIComponent(hour) : "");
  const { DASH, $, fixed, utcClock, status } = dashboard;
  const digits = (n) => (v) => fixed(v, n);
  const COLUMNS = [
    ["vehicle_id", null],
    ["at", (v) => v.slice(11, 19)],
    ["soc", digits(1)],
    ["voltage_v", digits(1)],
    ["current_a", digits(1)],
    ["spread_mv", digits(0)],
    ["temp_max_c", digits(1)],
    ["state", (v) => v],
    ["charged_kwh", digits(2)],
    ["discharged_kwh", digits(2)],
    ["sessions", digits(0)],
    ["soh_pct", digits(1)],
    ["capacity_ah", digits(1)],
    ["alerts", digits(0)],
  ];
  const TEXT_KEYS = new Set(["vehicle_id", "at", "state"]);

  const rows = new Map(); // vehicle id -> {tr, cells: {key: td}, data}
  let order = []; // the ids in the table's current order
  let sortKey = "vehicle_id";
  let sortDir = 1;
  let filled = false;
  let alertsKey = null;
  let hoursKey = null;

  function vehicleLink(id) {
    const a = document.createElement("a");
    a.href = "/vehicles/" + encodeURIComponent(id);
    a.textContent = id;
    return a;
  }

  function newRow(id) {
    const tr = document.createElement("tr");
    tr.dataset.vehicle = id;
    const cells = {};
    for (const [key] of COLUMNS) {
      const td = document.createElement("td");
      td.dataset.key = key;
      if (!TEXT_KEYS.has(key)) td.className = "n";
      if (key === "vehicle_id") td.append(vehicleLink(id));
      cells[key] = td;
      tr.append(td);
    }
    return { tr: tr, cells: cells, data: {} };
  }

  let energyHour = null;

  function timeSplit(t) {
    if (!t) return "";
    const min = (s) => (s === null ? "?" : (s / 60).toFixed(1));
    return "in " + energyHour + " UTC: driving " + min(t.driving) + " min, charging " + min(t.charging) + " min, parked " + min(t.parked) + " min";
  }

  // Write a row's cells, touching only those whose text changed (1,000 rows refresh cheaply).
  function fill(entry, data) {
    for (const [key, format] of COLUMNS) {
      if (format === null) continue;
      const value = data[key];
      const shown = value === null || value === undefined ? DASH : format(value);
      const td = entry.cells[key];
      if (td.textContent !== shown) td.textContent = shown;
    }
    const split = timeSplit(data.time_s);
    if (entry.cells.state.title !== split) entry.cells.state.title = split;
    const at = data.at || "";
    if (entry.cells.at.title !== at) entry.cells.at.title = at;
    const why = data.soh_reason || "";
    if (entry.cells.soh_pct.title !== why) entry.cells.soh_pct.title = why;
    const severity = data.severity || "";
    if ((entry.tr.dataset.severity || "") !== severity) entry.tr.dataset.severity = severity;
    entry.data = data;
  }

  function compare(a, b) {
    const x = rows.get(a).data[sortKey];
    const y = rows.get(b).data[sortKey];
    const xMissing = x === null || x === undefined;
    const yMissing = y === null || y === undefined;
    if (xMissing || yMissing) return xMissing === yMissing ? (a < b ? -1 : 1) : xMissing ? 1 : -1; // none last
    if (x === y) return a < b ? -1 : 1;
    if (TEXT_KEYS.has(sortKey)) return sortDir * (x < y ? -1 : 1);
    return sortDir * (x - y);
  }

  function sortRows() {
    const sorted = Array.from(rows.keys()).sort(compare);
    const same = sorted.length === order.length && sorted.every((id, i) => id === order[i]);
    if (!same) {
      const fragment = document.createDocumentFragment();
      for (const id of sorted) fragment.append(rows.get(id).tr);
      $("fleet-rows").append(fragment);
      order = sorted;
    }
  }

  function matches(data, text, state, alertsOnly) {
    if (text && !data.vehicle_id.toLowerCase().includes(text)) return false;
    if (state && data.state !== state) return false;
    return !alertsOnly || data.alerts > 0;
  }

  function filterRows() {
    const text = $("filter-text").value.trim().toLowerCase();
    const state = $("filter-state").value;
    const alertsOnly = $("filter-alerts").checked;
    let shown = 0;
    for (const entry of rows.values()) {
      const hide = !matches(entry.data, text, state, alertsOnly);
      if (entry.tr.hidden !== hide) entry.tr.hidden = hide;
      if (!hide) shown += 1;
    }
    $("shown-count").textContent = shown + " of " + rows.size + " vehicles shown";
  }

  function renderRows(list) {
    const seen = new Set();
    const fresh = document.createDocumentFragment();
    for (const data of list) {
      seen.add(data.vehicle_id);
      let entry = rows.get(data.vehicle_id);
      if (!entry) {
        entry = newRow(data.vehicle_id);
        rows.set(data.vehicle_id, entry);
        fresh.append(entry.tr);
      }
      fill(entry, data);
    }
    for (const [id, entry] of rows) {
      if (!seen.has(id)) {
        entry.tr.remove();
        rows.delete(id);
      }
    }
    $("fleet-rows").append(fresh);
    order = Array.from($("fleet-rows").children, (tr) => tr.dataset.vehicle);
    sortRows();
    filterRows();
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function renderAlerts(alerts, day) {
    const key = JSON.stringify(alerts) + (day || "");
    if (key === alertsKey) return;
    alertsKey = key;
    $("alerts-day").textContent = day ? "(fleet health of " + day + ")" : "";
    const body = $("alerts-rows");
    body.replaceChildren();
    for (const alert of alerts) {
      const tr = document.createElement("tr");
      tr.dataset.vehicle = alert.vehicle_id;
      tr.dataset.severity = alert.severity;
      const who = document.createElement("td");
      who.append(vehicleLink(alert.vehicle_id));
      const first = cell(alert.first_seen.slice(5, 16).replace("T", " "));
      first.title = alert.first_seen;
      tr.append(who, cell(alert.kind, "kind"), cell(alert.severity, "severity"), first);
      const more = document.createElement("tr");
      more.className = "evidence";
      const evidence = cell(alert.evidence, "evidence");
      evidence.colSpan = 4;
      more.append(evidence);
      body.append(tr, more);
    }
    if (!alerts.length) {
      const tr = document.createElement("tr");
      const td = cell(day ? "no open alerts" : "no fleet-health document yet");
      td.colSpan = 4;
      tr.append(td);
      body.append(tr);
    }
  }

  function renderNotices(notices) {
    const list = $("notices");
    list.replaceChildren();
    for (const notice of notices) {
      const li = document.createElement("li");
      li.dataset.level = notice.level;
      li.textContent = notice.text;
      list.append(li);
    }
  }

  function renderHours(hours) {
    const key = hours.join(",") + "|" + (hour || "");
    if (key === hoursKey) return;
    hoursKey = key;
    const picker = $("hour-picker");
    const options = [["", "live (this hour)"]].concat(hours.map((h) => [h, h + " UTC"]));
    if (hour && !hours.includes(hour)) options.splice(1, 0, [hour, hour + " UTC"]);
    picker.replaceChildren();
    for (const [value, label] of options) {
      const option = document.createElement("option");
      option.value = value;
      option.textContent = label;
      option.selected = value === (hour || "");
      picker.append(option);
    }
  }

  function describeSources(view) {
    const energy = view.energy_hour ? "the aggregate of " + view.energy_hour + " UTC" + (view.mode === "live" ? " (the last aggregated hour)" : "") : "no aggregate";
    const health = view.health_day ? "the fleet-health document of " + view.health_day : "no fleet-health document";
    const latest = view.mode === "live" ? "each vehicle's latest reading in this hour's batch files" : "each vehicle's last reading of " + view.hour + " in the curated data";
    const doing = view.mode === "live" ? "its state at that reading" : "where it spent most of the hour";
    $("sources-note").textContent = "SOC to hottest cell: " + latest + ". Doing: " + doing + ". Charged, discharged, sessions: " + energy + ". SOH, capacity, alerts: " + health + ".";
  }

  function render(view) {
    performance.mark("fleet-render-start");
    renderHours(view.hours || []);
    renderNotices(view.notices || []);
    energyHour = view.energy_hour;
    renderRows(view.rows || []);
    renderAlerts(view.alerts || [], view.health_day);
    describeSources(view);
    const when = view.generated_at ? utcClock(view.generated_at) : "";
    const what = view.mode === "live" ? "live, hour " + view.hour + " UTC" : "hour " + view.hour + " UTC";
    const problems = (view.notices || []).some((n) => n.level === "error");
    status(what + " · " + rows.size + " vehicles · updated " + when + " UTC, every " + view.refresh_s + " s", problems ? "degraded" : "ok");
    if (!filled && rows.size) {
      filled = true;
      performance.mark("fleet-table-filled");
      performance.measure("fleet-first-render", "fleet-render-start", "fleet-table-filled");
    } else {
      performance.measure("fleet-render", "fleet-render-start");
    }
  }

  function sortBy(th) {
    const started = performance.now();
    const key = th.dataset.key;
    sortDir = key === sortKey ? -sortDir : 1;
    sortKey = key;
    for (const other of document.querySelectorAll("#fleet th")) other.removeAttribute("aria-sort");
    th.setAttribute("aria-sort", sortDir === 1 ? "ascending" : "descending");
    sortRows();
    performance.measure("fleet-sort", { start: started, end: performance.now() });
  }

  function filtered() {
    const started = performance.now();
    filterRows();
    performance.measure("fleet-filter", { start: started, end: performance.now() });
  }

  function answered(view, code) {
    if (code === 400) {
      status("Cannot show this hour: " + view.error, "error");
      return false; // a bad address does not get better by asking again
    }
    render(view);
    return true;
  }

  for (const th of document.querySelectorAll("#fleet th")) th.querySelector("button").addEventListener("click", () => sortBy(th));
  $("filter-text").addEventListener("input", filtered);
  $("filter-state").addEventListener("change", filtered);
  $("filter-alerts").addEventListener("change", filtered);
  $("hour-picker").addEventListener("change", (event) => {
    const value = event.target.value;
    window.location.assign("/fleet" + (value ? "?hour=" + encodeURIComponent(value) : ""));
  });
  dashboard.poll(API, answered, { handled: [400] });
})();
