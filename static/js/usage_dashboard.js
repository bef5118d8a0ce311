// Usage dashboards: draw the plotly figures rendered into the page, and offer the browser's time zone.
(function () {
  "use strict";

  function readJson(element) {
    return element ? JSON.parse(element.textContent) : null;
  }

  function drawCharts() {
    var holders = document.querySelectorAll("[data-plotly-figure]");
    if (!holders.length) return;
    if (!window.Plotly) {
      holders.forEach(function (holder) {
        holder.textContent = "The chart library did not load; the tables below show the same numbers.";
      });
      return;
    }
    var config = readJson(document.getElementById("plot-config")) || {};
    holders.forEach(function (holder) {
      var figure = readJson(holder.parentElement.querySelector('script[type="application/json"]'));
      if (!figure) return;
      window.Plotly.newPlot(holder, figure.data, figure.layout, config).then(function () {
        holder.setAttribute("data-rendered", "true");
        // A point carries the address of the calls behind it (usage/dashboards/drill_down.py): a click opens it.
        holder.on("plotly_click", function (event) {
          var url = event.points && event.points[0] && event.points[0].customdata;
          if (url) window.location.assign(url);
        });
      });
    });
  }

  // The page shows UTC unless the URL names a zone (so a shared link shows the same numbers); this button
  // switches to the viewer's own zone, keeping the range.
  function offerBrowserTimeZone() {
    var button = document.querySelector("[data-use-browser-tz]");
    var field = document.getElementById("range-tz");
    if (!button || !field || !window.Intl) return;
    var zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!zone || zone === field.value) return;
    button.textContent = "Use my time zone (" + zone + ")";
    button.hidden = false;
    button.addEventListener("click", function () {
      var url = new URL(window.location.href);
      url.searchParams.set("tz", zone);
      window.location.assign(url.toString());
    });
  }

  // Suggestions for the time zone field, from the browser's own list (rendering ~600 options into every page
  // cost the server more than the page's queries). The server checks whatever is typed.
  function fillTimeZones() {
    var list = document.querySelector("[data-time-zones]");
    if (!list || !window.Intl || typeof Intl.supportedValuesOf !== "function") return;
    Intl.supportedValuesOf("timeZone").forEach(function (zone) {
      var option = document.createElement("option");
      option.value = zone;
      list.appendChild(option);
    });
  }

  // The Logs tab's user and model suggestions (usage/dashboards/logs_views.py): fetched once, when one of the two
  // fields is first used, so that opening the tab does not wait for the rollups' breakdown of its range.
  function offerLogSuggestions() {
    var form = document.querySelector("[data-log-suggestions]");
    if (!form || !window.fetch) return;
    var requested = false;
    function fill(list, values) {
      if (!list || !Array.isArray(values)) return;
      values.forEach(function (value) {
        var option = document.createElement("option");
        option.value = value;
        list.appendChild(option);
      });
    }
    function load() {
      if (requested) return;
      requested = true;
      fetch(form.getAttribute("data-log-suggestions"), {credentials: "same-origin", headers: {Accept: "application/json"}})
        .then(function (response) { return response.ok ? response.json() : null; })
        .then(function (suggestions) {
          if (!suggestions) return;
          fill(document.getElementById("log-users"), suggestions.users);
          fill(document.getElementById("log-models"), suggestions.models);
          form.setAttribute("data-suggestions-loaded", "true");
        })
        .catch(function () { requested = false; });  // offline for a moment: the next use tries again
    }
    ["log-user", "log-model"].forEach(function (id) {
      var field = document.getElementById(id);
      if (!field) return;
      field.addEventListener("focus", load);
      field.addEventListener("input", load);
    });
  }

  function start() {
    fillTimeZones();
    offerLogSuggestions();
    offerBrowserTimeZone();
    drawCharts();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
