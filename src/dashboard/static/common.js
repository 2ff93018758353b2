// What the three pages share, loaded before each page's own script: element lookup, number and time formats
// (times always in UTC), the status line, and fetching a page's JSON with one wording for a missing token, an
// HTTP error and a dashboard that does not answer.
"use strict";

const dashboard = (function () {
  const DASH = "—";
  const $ = (id) => document.getElementById(id);
  const count = (n) => Math.round(n).toLocaleString("en-US");
  const fixed = (v, digits) => (v === null || v === undefined ? DASH : Number(v).toFixed(digits));
  // "HH:MM:SS" in UTC of an ISO 8601 text or of unix seconds.
  const utcClock = (at) => new Date(typeof at === "number" ? at * 1000 : at).toISOString().slice(11, 19);

  // The header's status line: what the page shows and how fresh it is, or what went wrong (state: ok, degraded, error).
  function status(text, state) {
    const el = $("status");
    el.textContent = text;
    el.dataset.state = state;
  }

  // The JSON answer of url as {status, body} when it is ok or one of `handled` (statuses the page shows itself);
  // else null, with the reason on the status line.
  async function getJson(url, handled) {
    try {
      const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
      if (response.ok || (handled || []).includes(response.status)) {
        return { status: response.status, body: await response.json() };
      }
      if (response.status === 401) {
        status("This dashboard needs its token: open it once as " + location.pathname + "?token=…", "error");
      } else {
        status("The dashboard answered HTTP " + response.status + "; retrying", "error");
      }
    } catch (err) {
      status("The dashboard does not answer (" + err.message + "); retrying", "error");
    }
    return null;
  }

  // Asks url after firstDelayS, then again every refresh_s its answer names (after a failure: the last interval),
  // until show(body, status) returns false.
  function poll(url, show, { handled = [], firstDelayS = 0, retryS = 2 } = {}) {
    let delayS = retryS;
    async function once() {
      const answer = await getJson(url, handled);
      if (answer !== null) {
        if (show(answer.body, answer.status) === false) return;
        if (answer.body.refresh_s) delayS = Math.max(0.2, answer.body.refresh_s);
      }
      window.setTimeout(once, delayS * 1000);
    }
    window.setTimeout(once, firstDelayS * 1000);
  }

  return Object.freeze({ DASH, $, count, fixed, utcClock, status, getJson, poll });
})();
