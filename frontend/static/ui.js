// Page behaviours that work without it: fields shown for the chosen option only, and the menu closing.
(function () {
  "use strict";
  // <select data-reveal> shows, in its form, the [data-show-for] blocks that list its value
  // (space-separated) and hides the others. Without JavaScript every block stays visible.
  function reveal(root) {
    var scope = root && root.querySelectorAll ? root : document;
    var selects = Array.prototype.slice.call(scope.querySelectorAll("select[data-reveal]"));
    if (scope.matches && scope.matches("select[data-reveal]")) selects.push(scope);
    selects.forEach(function (select) {
      var form = select.form;
      if (!form) return;
      var apply = function () {
        form.querySelectorAll("[data-show-for]").forEach(function (block) {
          block.hidden = block.getAttribute("data-show-for").split(" ").indexOf(select.value) === -1;
        });
      };
      if (!select.hasAttribute("data-reveal-bound")) {
        select.setAttribute("data-reveal-bound", "");
        select.addEventListener("change", apply);
      }
      apply();
    });
  }
  document.addEventListener("DOMContentLoaded", function () { reveal(document); });
  document.addEventListener("htmx:load", function (ev) { reveal(ev.target); });

  // A <details class="navmenu"> closes when the person clicks elsewhere or presses Escape.
  document.addEventListener("click", function (ev) {
    document.querySelectorAll("details.navmenu[open]").forEach(function (menu) {
      if (!menu.contains(ev.target)) menu.removeAttribute("open");
    });
  });
  document.addEventListener("keydown", function (ev) {
    if (ev.key !== "Escape") return;
    document.querySelectorAll("details.navmenu[open]").forEach(function (menu) {
      menu.removeAttribute("open");
      var summary = menu.querySelector("summary");
      if (summary) summary.focus();
    });
  });
})();
