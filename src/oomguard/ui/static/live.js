// oomguard dashboard: while the page's job runs (#live[data-live="1"]), fetch the same page
// every few seconds and swap the fresh #live in place: no reload, no library. Without
// JavaScript every page is whole; it just does not refresh itself.
(function () {
  "use strict";
  var INTERVAL_MS = 2000;

  function current() {
    return document.getElementById("live");
  }

  function refresh() {
    var live = current();
    if (!live || live.getAttribute("data-live") !== "1") {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.text();
      })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("live");
        var old = current();
        if (fresh && old) {
          var n = Number(old.getAttribute("data-refreshes") || "0") + 1;
          fresh.setAttribute("data-refreshes", String(n));
          old.replaceWith(document.importNode(fresh, true));
        }
      })
      .catch(function () {
        // A server restarting or a dropped connection: try again at the next tick.
      })
      .then(function () {
        window.setTimeout(refresh, INTERVAL_MS);
      });
  }

  window.setTimeout(refresh, INTERVAL_MS);
})();
