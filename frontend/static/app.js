// Small behaviours that htmx does not cover: copy buttons, "use suggested value", toasts.
(function () {
  "use strict";
  function toast(message, level) {
    var box = document.getElementById("toasts");
    if (!box) return;
    var el = document.createElement("div");
    el.className = "toast" + (level === "error" ? " error" : "");
    el.setAttribute("role", "status");
    el.textContent = message;
    box.appendChild(el);
    setTimeout(function () { el.remove(); }, 4000);
  }
  document.addEventListener("click", function (ev) {
    var copyBtn = ev.target.closest("[data-copy]");
    if (copyBtn) {
      var value = copyBtn.getAttribute("data-copy");
      var done = function () {
        var label = copyBtn.textContent;
        copyBtn.textContent = copyBtn.getAttribute("data-done") || "✔";
        setTimeout(function () { copyBtn.textContent = label; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(value).then(done, done);
      } else {  // plain-http deployments: fall back to a hidden textarea
        var ta = document.createElement("textarea");
        ta.value = value; ta.style.position = "fixed"; ta.style.opacity = "0";
        document.body.appendChild(ta); ta.select();
        try { document.execCommand("copy"); } catch (e) { /* nothing to do */ }
        ta.remove(); done();
      }
      return;
    }
    var fillBtn = ev.target.closest("[data-fill]");
    if (fillBtn) {
      var input = document.querySelector(fillBtn.getAttribute("data-fill"));
      if (input) {
        input.value = fillBtn.getAttribute("data-value");
        input.dispatchEvent(new Event("input", { bubbles: true }));
      }
    }
  });
  document.addEventListener("siyu:toast", function (ev) {
    toast(ev.detail.message, ev.detail.level);
  });
  // Show error fragments (HX-Retarget #flash) even for 4xx answers, which htmx ignores by default.
  document.addEventListener("htmx:beforeSwap", function (ev) {
    var status = ev.detail.xhr.status;
    if (status === 400 || status === 404 || status === 409 || status === 403 || status === 429) {
      ev.detail.shouldSwap = true;
      ev.detail.isError = false;
    }
  });
})();
