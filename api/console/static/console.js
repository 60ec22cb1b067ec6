// The console's own script: confirmations, the version slider's label, and live updates from
// /v1/stream that refresh the page's live regions (htmx swaps them in place).
(function () {
  "use strict";

  document.addEventListener("submit", function (event) {
    var question = event.target.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  document.addEventListener("input", function (event) {
    if (event.target.id === "version") {
      var shown = document.getElementById("version-shown");
      if (shown) { shown.textContent = event.target.value; }
    }
  });

  var url = document.body.getAttribute("data-stream");
  var badge = document.getElementById("live");
  if (!url || !window.EventSource || !badge) { return; }

  var timer = null;
  var last = 0;
  function refresh() {
    timer = null;
    last = Date.now();
    if (window.htmx) { window.htmx.trigger(document.body, "so:changed"); }
  }
  function schedule() {
    // At most one refresh a second however fast events arrive.
    if (timer) { return; }
    timer = window.setTimeout(refresh, Math.max(150, 1000 - (Date.now() - last)));
  }
  function show(state, title) {
    badge.className = "live " + state;
    badge.title = title;
    document.body.setAttribute("data-live", state);
  }

  var polling = null;
  var source = new EventSource(url);
  source.onopen = function () { show("on", "live: this page updates as events arrive"); };
  source.onmessage = function (message) {
    document.body.setAttribute("data-last-event", message.lastEventId);
    schedule();
  };
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (signed out, or too many streams): fall back to a slow poll.
      show("off", "live feed unavailable: refreshing every 15 s");
      if (!polling) { polling = window.setInterval(refresh, 15000); }
    } else {
      show("wait", "reconnecting to the live feed");
    }
  };
  window.addEventListener("pagehide", function () { source.close(); });
})();
