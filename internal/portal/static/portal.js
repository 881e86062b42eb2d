// Sluice portal: progressive enhancement only. Every page works without
// this script; with it, copy buttons copy, and the parts of a page marked
// data-live (a conversion's progress, a repository's images, the running
// operations) are refreshed in place every few seconds while the tab is
// visible, so a pushed image or a finished conversion shows up without a
// reload. Written for this project; no dependencies.
(function () {
  "use strict";

  function wireCopy(root) {
    root.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
      b.hidden = false;
      if (b.dataset.wired) return;
      b.dataset.wired = "1";
      b.addEventListener("click", function () {
        var done = function () {
          var was = b.textContent;
          b.textContent = "Copied";
          setTimeout(function () { b.textContent = was; }, 1200);
        };
        if (navigator.clipboard && window.isSecureContext) {
          navigator.clipboard.writeText(b.dataset.copy).then(done, function () { select(b); });
        } else {
          select(b);
        }
      });
    });
  }

  // select selects the text next to a copy button when the clipboard API
  // is not available (a plain-HTTP registry), for Ctrl+C.
  function select(b) {
    var code = b.previousElementSibling;
    if (!code) return;
    var range = document.createRange();
    range.selectNodeContents(code);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  var every = parseInt(document.body.dataset.liveEvery || "0", 10);
  var busy = false;

  function refresh() {
    if (busy) return;
    if (document.hidden) { schedule(); return; }
    // Do not replace a part the user is typing in or has opened.
    var active = document.activeElement;
    busy = true;
    fetch(location.href, { headers: { "X-Sluice-Live": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (r.redirected || !r.ok) throw new Error("stale page");
        return r.text();
      })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        document.querySelectorAll("[data-live][id]").forEach(function (el) {
          if (active && el.contains(active) && active !== document.body) return;
          if (el.querySelector("details[open]")) return;
          var fresh = doc.getElementById(el.id);
          if (fresh && fresh.innerHTML !== el.innerHTML) {
            el.innerHTML = fresh.innerHTML;
            wireCopy(el);
          }
        });
        every = parseInt(doc.body.dataset.liveEvery || "0", 10);
      })
      .catch(function () {})
      .then(function () { busy = false; schedule(); });
  }

  // schedule polls at the page's pace: what it asks for while something
  // is under way, every 5 s otherwise.
  function schedule() {
    setTimeout(refresh, (every > 0 ? every : 5) * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireCopy(document);
    // Pages without live parts change only by the user's actions.
    if (document.querySelector("[data-live][id]")) {
      schedule();
    }
  });
})();
