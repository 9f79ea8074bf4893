// The console's only script of its own (no inline script: the Content-Security-Policy
// allows scripts from the gateway's own files only). Pages work without it; it adds
// copy buttons, times in the browser's time zone, and the time zone the event filters
// are read in.
(function () {
  "use strict";

  function localTimes(root) {
    var lang = document.documentElement.lang || undefined;
    root.querySelectorAll("time[datetime]").forEach(function (node) {
      var when = new Date(node.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      node.textContent = when.toLocaleString(lang, { dateStyle: "medium", timeStyle: "medium" });
      node.title = node.getAttribute("datetime");
    });
  }

  function timeZoneOffsets(root) {
    // Minutes east of UTC, as the filters' datetime-local values are in the browser's zone.
    root.querySelectorAll("input[data-time-zone-offset]").forEach(function (node) {
      node.value = String(-new Date().getTimezoneOffset());
    });
  }

  function copyButtons(root) {
    root.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
      button.addEventListener("click", function () {
        var field = document.getElementById(button.getAttribute("data-copy"));
        if (!field) return;
        field.select();
        var done = function () {
          button.setAttribute("data-copied", "true");
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(field.value).then(done, function () {
            document.execCommand("copy");
            done();
          });
        } else {
          document.execCommand("copy");
          done();
        }
      });
    });
  }

  function enhance(root) {
    localTimes(root);
    timeZoneOffsets(root);
    copyButtons(root);
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
  });
  document.addEventListener("htmx:afterSettle", function (event) {
    enhance(event.target);
  });
})();
