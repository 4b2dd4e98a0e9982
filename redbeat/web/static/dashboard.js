// RedBeat's dashboard: countdowns, confirmations and polling. Ours, no library; loaded
// from our own origin (the Content-Security-Policy forbids inline scripts).
(function () {
  "use strict";
  var POLL_MS = 5000;
  var root = (document.querySelector('meta[name="redbeat-root"]') || {}).content || "";

  function relative(seconds) {
    var amount = Math.abs(seconds), words;
    if (amount >= 86400) words = Math.floor(amount / 86400) + "d";
    else if (amount >= 3600) words = Math.floor(amount / 3600) + "h";
    else if (amount >= 60) words = Math.floor(amount / 60) + "m";
    else words = Math.floor(amount) + "s";
    return seconds >= 0 ? "in " + words : words + " ago";
  }

  function tick() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time.countdown[data-at]").forEach(function (el) {
      el.textContent = relative(parseFloat(el.dataset.at) - now);
    });
  }

  // A form with data-confirm asks first; yes fills its "confirmed" field, so the server
  // acts at once instead of showing its own confirmation page.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); return; }
    var field = form.querySelector('input[name="confirmed"]');
    if (field) field.value = "yes";
  });

  function field(data, path) {
    return path.split(".").reduce(function (value, key) {
      return value === null || value === undefined ? value : value[key];
    }, data);
  }

  function showOverview(data) {
    document.querySelectorAll("[data-field]").forEach(function (el) {
      var value = field(data, el.dataset.field);
      el.textContent = value === null || value === undefined ? "-" : String(value);
    });
    var health = document.getElementById("health");
    if (health) {
      health.dataset.health = data.health.word;
      health.className = "health-" + data.health.word;
    }
    var list = document.getElementById("most-overdue");
    if (list) {
      list.replaceChildren();
      data.most_overdue.forEach(function (entry) {
        var item = document.createElement("li"), link = document.createElement("a");
        item.className = "overdue";
        // The server sends the link ready-made from the name's exact bytes, and the name as
        // the pages show it: encodeURIComponent throws on a name that is not UTF-8.
        item.dataset.name = entry.shown;
        link.href = entry.link;
        link.textContent = entry.shown;
        item.append(link, " " + (entry.due_now ? "due now" : entry.overdue_seconds + " s"));
        list.append(item);
      });
    }
    var chart = document.getElementById("lateness-chart");
    if (chart) chart.src = root + "/chart.svg?at=" + Date.now();
  }

  // The schedule and entry pages: the server renders the rows again (escaped there), and
  // the live part of the page is swapped for its fresh copy.
  function showPage(html) {
    var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
    var live = document.getElementById("live");
    if (fresh && live) live.replaceChildren.apply(live, Array.from(fresh.childNodes));
    tick();
  }

  function poll() {
    if (document.hidden) return;
    var kind = document.body.dataset.poll;
    if (kind === "overview") {
      fetch(root + "/api/overview", {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) { if (data) showOverview(data); })
        .catch(function () {});
    } else if (kind === "page") {
      fetch(window.location.href, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html) showPage(html); })
        .catch(function () {});
    }
  }

  tick();
  setInterval(tick, 1000);
  if (document.body.dataset.poll) setInterval(poll, POLL_MS);
})();
