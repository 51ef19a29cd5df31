// The live page: HTML, styles and script in one document, so the page needs
// nothing but this process (the admin server also forbids anything else with
// a Content-Security-Policy, see StandardPages). It asks /live.json for the
// numbers once a second and redraws. Values from the mesh (service and
// endpoint names) are only ever set as text, never parsed as HTML.
//
// Hooks for tests and scripts: each service is a <section data-service=...>
// whose .calls holds the calls made so far; each endpoint a
// <tr class="endpoint" data-endpoint=ADDRESS
// data-state=healthy|ejected|unreachable|gone>;
// <body data-updates=N> counts the refreshes that succeeded.
#include "meshlib/admin/live.h"

namespace meshlib::admin {

const std::string& LivePageHtml() {
  static const std::string* html = new std::string(R"html(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshlib live</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2329; background: #f4f6f8; }
  header { background: #1d2329; color: #fff; padding: 10px 20px; display: flex; gap: 20px;
           align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  header .status { color: #aab4bf; }
  header .status.error { color: #ff8a80; }
  main { padding: 12px 20px; }
  section { background: #fff; border-radius: 6px; padding: 12px 16px; margin-bottom: 14px;
            box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  section h2 { font-size: 16px; margin: 0 0 8px; }
  .stats { display: flex; flex-wrap: wrap; gap: 18px; margin-bottom: 10px; }
  .stat .label { display: block; color: #66717d; font-size: 12px; }
  .stat .value { font-size: 20px; font-variant-numeric: tabular-nums; }
  table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
  th { text-align: left; color: #66717d; font-weight: normal; font-size: 12px;
       border-bottom: 1px solid #dde2e7; padding: 4px 8px; }
  td { padding: 4px 8px; border-bottom: 1px solid #eef1f4; }
  td.num { text-align: right; }
  .state { border-radius: 3px; padding: 1px 6px; font-size: 12px; }
  .state.healthy { background: #d8f3dc; color: #1b5e20; }
  .state.ejected { background: #ffd6d6; color: #b71c1c; }
  .state.gone { background: #e6e8eb; color: #59636e; }
  .state.unreachable { background: #ffe8c2; color: #8a4b00; }
  svg.spark { display: block; }
  svg.spark polyline { fill: none; stroke: #1e6fd9; stroke-width: 1.5; }
  svg.spark.bad polyline { stroke: #d93025; }
  .empty { color: #66717d; }
</style>
</head>
<body data-updates="0">
<header><h1>meshlib live</h1><span class="status" id="status">loading…</span></header>
<main id="main"><p class="empty">Waiting for the first sample…</p></main>
<script>
"use strict";
(function () {
  const svgNs = "http://www.w3.org/2000/svg";

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    for (const c of children) {
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function rate(r) { return r >= 100 ? r.toFixed(0) : r.toFixed(1); }
  function percent(s) { return s === null ? "–" : (100 * s).toFixed(2) + "%"; }
  function seconds(s) {
    if (s === null) return "–";
    if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
    if (s < 1) return (s * 1e3).toFixed(s < 0.01 ? 2 : 1) + " ms";
    return s.toFixed(2) + " s";
  }
  function share(s) { return s === null ? "–" : (100 * s).toFixed(1) + "%"; }

  // A small line plot of the last minutes; a null (nothing happened) breaks
  // the line. `floor` keeps a flat success rate at the top, not mid-plot.
  function spark(values, title, opts) {
    const w = 200, h = 34, n = Math.max(values.length, 2);
    const svg = document.createElementNS(svgNs, "svg");
    svg.setAttribute("class", "spark" + (opts && opts.bad ? " bad" : ""));
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    const t = document.createElementNS(svgNs, "title");
    t.textContent = title;
    svg.append(t);
    const present = values.filter(v => v !== null);
    let hi = present.length ? Math.max(...present) : 1;
    let lo = opts && opts.floor !== undefined ? Math.min(opts.floor, ...present) : 0;
    if (hi <= lo) hi = lo + 1;
    let points = [];
    const flush = () => {
      if (points.length > 0) {
        if (points.length === 1) points.push(points[0]);
        const line = document.createElementNS(svgNs, "polyline");
        line.setAttribute("points", points.join(" "));
        svg.append(line);
      }
      points = [];
    };
    values.forEach((v, i) => {
      if (v === null) { flush(); return; }
      const x = (w - 2) * i / (n - 1) + 1;
      const y = h - 2 - (h - 4) * (v - lo) / (hi - lo);
      points.push(x.toFixed(1) + "," + y.toFixed(1));
    });
    flush();
    return svg;
  }

  function stat(label, cls, value, plot) {
    return el("div", {class: "stat"}, el("span", {class: "label"}, label),
              el("span", {class: "value " + cls}, value), plot || "");
  }

  function stats(s) {
    const h = s.history;
    return el("div", {class: "stats"},
      stat("calls/s", "rate", rate(s.rate), spark(h.rate, "calls per second")),
      stat("success", "success", percent(s.success),
           spark(h.success, "success rate", {floor: 0.9, bad: s.success !== null && s.success < 0.99})),
      stat("p50", "p50", seconds(s.p50), spark(h.p50, "p50 latency")),
      stat("p99", "p99", seconds(s.p99), spark(h.p99, "p99 latency")),
      stat("calls so far", "calls", String(s.calls)));
  }

  function endpointTable(endpoints) {
    const head = el("tr", {}, ...["endpoint", "state", "share", "attempts/s", "success",
        "latency estimate", "in flight", "attempts so far", "attempts/s, last minutes",
        "latency estimate, last minutes"].map(t => el("th", {}, t)));
    const body = el("tbody");
    for (const e of endpoints) {
      const state = !e.present ? "gone" : e.ejected ? "ejected"
                  : e.unreachable ? "unreachable" : "healthy";
      body.append(el("tr", {class: "endpoint", "data-endpoint": e.address, "data-state": state},
        el("td", {class: "address"}, e.address),
        el("td", {}, el("span", {class: "state " + state}, state)),
        el("td", {class: "num share"}, share(e.share)),
        el("td", {class: "num rate"}, rate(e.rate)),
        el("td", {class: "num success"}, percent(e.success)),
        el("td", {class: "num latency"}, seconds(e.latency)),
        el("td", {class: "num in-flight"}, String(e.in_flight)),
        el("td", {class: "num attempts"}, String(e.attempts)),
        el("td", {}, spark(e.history.rate, "attempts per second")),
        el("td", {}, spark(e.history.latency, "latency estimate"))));
    }
    return el("table", {class: "endpoints"}, el("thead", {}, head), body);
  }

  function render(data) {
    const main = document.getElementById("main");
    const parts = [];
    for (const s of data.services) {
      parts.push(el("section", {class: "service", "data-service": s.name},
        el("h2", {}, "service ", s.name), stats(s),
        s.endpoints.length ? endpointTable(s.endpoints)
                           : el("p", {class: "empty"}, "no endpoints yet")));
    }
    for (const m of data.served) {
      parts.push(el("section", {class: "served", "data-method": m.name},
        el("h2", {}, "served: ", m.name), stats(m)));
    }
    if (!parts.length) parts.push(el("p", {class: "empty"}, "Nothing called or served yet."));
    main.replaceChildren(...parts);
    const when = new Date(data.time * 1000);
    const status = document.getElementById("status");
    status.className = "status";
    status.textContent = "updated " + when.toLocaleTimeString() +
        " · every second · the last " + Math.round(data.history / 60) + " minutes plotted";
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  }

  async function refresh() {
    try {
      const r = await fetch("live.json", {cache: "no-store"});
      if (!r.ok) throw new Error("HTTP " + r.status);
      render(await r.json());
    } catch (e) {
      const status = document.getElementById("status");
      status.className = "status error";
      status.textContent = "cannot read live.json: " + e.message;
    } finally {
      setTimeout(refresh, 1000);
    }
  }
  refresh();
})();
</script>
</body>
</html>
)html");
  return *html;
}

}  // namespace meshlib::admin
