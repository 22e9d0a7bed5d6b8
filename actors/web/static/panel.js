// Live progress of files being sent: the files page and a file's page poll /progress every 2 s
// for the files they show that are not finished, and update the counts in place.
(function () {
  "use strict";
  var FINAL = ["delivered", "failed", "expired"];
  function cells() { return Array.prototype.slice.call(document.querySelectorAll("[data-progress]")); }
  function summary(c) {
    return c.queued + " waiting · " + c.submitted + " at the gateway · " + c.delivered + " delivered · " +
      c.failed + " failed" + (c.expired ? " · " + c.expired + " expired" : "");
  }
  function done(c) {
    var total = c.queued + c.submitted + c.delivered + c.failed + c.expired;
    return c.status !== "received" && c.status !== "accepted" && c.queued === 0 && c.submitted === 0 && total > 0;
  }
  function poll() {
    var pending = cells().filter(function (el) { return el.dataset.finished !== "1"; });
    if (!pending.length) { return; }
    var query = pending.map(function (el) { return "file=" + encodeURIComponent(el.dataset.progress); }).join("&");
    fetch("/progress?" + query, { credentials: "same-origin", headers: { "accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : {}; })
      .then(function (answer) {
        pending.forEach(function (el) {
          var c = answer[el.dataset.progress];
          if (!c) { return; }
          if (el.dataset.live) {
            el.querySelectorAll("[data-count]").forEach(function (b) { b.textContent = c[b.dataset.count]; });
          } else {
            el.textContent = summary(c);
          }
          var row = el.closest("tr");
          if (row) {
            var status = row.querySelector(".status");
            if (status && status.textContent !== c.status) { status.textContent = c.status; status.className = "status " + c.status; }
          }
          if (done(c)) { el.dataset.finished = "1"; }
        });
      })
      .catch(function () { /* the next round tries again */ })
      .finally(function () { window.setTimeout(poll, 2000); });
  }
  document.addEventListener("DOMContentLoaded", function () { if (cells().length) { poll(); } });
  void FINAL;
})();
