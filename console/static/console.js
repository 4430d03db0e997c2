// Portcullis console: live refresh of the page's #live part on server-sent
// change events, and confirmation of deletes. No other behaviour.
"use strict";
(function () {
  function confirmDeletes(root) {
    root.querySelectorAll("form.delete button[data-confirm]").forEach(function (b) {
      b.addEventListener("click", function (ev) {
        if (!window.confirm(b.getAttribute("data-confirm"))) {
          ev.preventDefault();
          return;
        }
        b.form.querySelector("input[name=confirm]").value = "yes";
      });
    });
  }
  confirmDeletes(document);
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  if (!live || !window.EventSource) return;
  var pending = false;
  function refresh() {
    if (pending) return;
    pending = true;
    var u = new URL(window.location.href);
    u.searchParams.set("fragment", "1");
    fetch(u.toString(), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { live.innerHTML = html; confirmDeletes(live); })
      .catch(function () {})
      .finally(function () { pending = false; });
  }
  var es = new EventSource("/events");
  es.addEventListener("change", refresh);
  es.onopen = function () { if (status) { status.textContent = "live"; status.className = "status on"; } };
  es.onerror = function () { if (status) { status.textContent = "reconnecting"; status.className = "status off"; } };
})();
