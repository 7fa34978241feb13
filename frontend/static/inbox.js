// The inbox page only: live updates (server-sent events → htmx re-fetches), keyboard shortcuts and the
// composer's canned replies. Everything shown comes from the server's scoped fragments; the events carry
// only a conversation id and the kind of change.
(function () {
  "use strict";
  var root = document.getElementById("inbox");
  if (!root || !window.htmx) return;

  function list() { return document.getElementById("conv-list"); }
  function openId() {
    var pane = document.getElementById("thread-pane");
    return pane ? pane.getAttribute("data-conv") : null;
  }
  function listQuery() {
    var l = list();
    return l ? (l.getAttribute("data-query") || "") : "";
  }
  function rowUrl(id) {
    var q = listQuery();
    var current = openId();
    return "/inbox/conversations/" + id + "/row?" + q + (current ? (q ? "&" : "") + "current=" + current : "");
  }

  // --- live: one EventSource, coalesced re-fetches ---------------------------------------------------
  var pending = {};  // conversation id → {moved: bool}
  var flushTimer = null;
  var countsTimer = null;

  function refreshCounts() {
    clearTimeout(countsTimer);
    countsTimer = setTimeout(function () { htmx.trigger(document.body, "inbox:counts"); }, 150);
  }

  function refreshRow(id, moved) {
    var l = list();
    if (!l) return;
    var row = document.getElementById("conv-row-" + id);
    if (row && !moved) {
      htmx.ajax("GET", rowUrl(id), { target: row, swap: "outerHTML" });
      return;
    }
    // New activity moves a conversation to the top; a conversation not shown yet may now belong here.
    if (row) row.remove();
    var empty = l.querySelector(".empty-list");
    htmx.ajax("GET", rowUrl(id), { target: l, swap: "afterbegin" }).then(function () {
      var rows = l.querySelectorAll("#conv-row-" + id);
      for (var i = 1; i < rows.length; i++) rows[i].remove();  // two quick events: keep one row
      if (empty && l.querySelector(".conv-row")) empty.remove();
    });
  }

  function flush() {
    flushTimer = null;
    var ids = pending;
    pending = {};
    Object.keys(ids).forEach(function (id) {
      refreshRow(id, ids[id].moved);
      if (openId() === id) {
        var live = document.getElementById("conv-live");
        if (live) htmx.trigger(live, "inbox:refresh");
      }
    });
    refreshCounts();
  }

  function onConversation(data) {
    var id = String(data.id);
    var moved = data.kind === "message" || data.kind === "status";
    pending[id] = { moved: (pending[id] && pending[id].moved) || moved };
    if (!flushTimer) flushTimer = setTimeout(flush, 120);
  }

  function resync() {
    var form = document.getElementById("list-filters");
    if (form) htmx.trigger(form, "change");
    var live = document.getElementById("conv-live");
    if (live) htmx.trigger(live, "inbox:refresh");
  }

  var state = document.getElementById("live-state");
  function showState(on) {
    if (!state) return;
    state.textContent = state.getAttribute(on ? "data-live" : "data-offline");
    state.className = "live-state " + (on ? "on" : "off");
  }

  var source = null;
  var everConnected = false;
  function connect() {
    source = new EventSource(root.getAttribute("data-stream"));
    source.addEventListener("ready", function () {
      showState(true);
      if (everConnected) resync();  // changes may have happened while the connection was down
      everConnected = true;
    });
    source.addEventListener("conversation", function (ev) {
      try { onConversation(JSON.parse(ev.data)); } catch (e) { /* a malformed event changes nothing */ }
    });
    source.addEventListener("presence", function () {
      var form = document.getElementById("presence");
      if (form) htmx.ajax("GET", "/inbox/presence", { target: form, swap: "outerHTML" });
    });
    source.addEventListener("resync", resync);
    source.onerror = function () { showState(false); };  // EventSource reconnects by itself
  }
  connect();
  window.addEventListener("beforeunload", function () { if (source) source.close(); });

  // A conversation that left the viewer's scope answers 404: drop its row or show the empty pane,
  // instead of the generic error box.
  function pathOf(detail) {
    return (detail.requestConfig && detail.requestConfig.path) || (detail.pathInfo && detail.pathInfo.requestPath) || "";
  }

  document.addEventListener("htmx:beforeSwap", function (ev) {
    var path = pathOf(ev.detail);
    if (ev.detail.xhr.status !== 404 || path.indexOf("/inbox/conversations/") !== 0) return;
    if (/\/row(\?|$)/.test(path)) {
      ev.detail.shouldSwap = false;
      var m = path.match(/\/inbox\/conversations\/(\d+)\//);
      var row = m && document.getElementById("conv-row-" + m[1]);
      if (row) row.remove();
    } else if (/\/live(\?|$)/.test(path)) {
      ev.detail.shouldSwap = false;
      var area = document.getElementById("conv-area");
      var gone = document.getElementById("tpl-gone");
      if (area && gone) area.innerHTML = gone.innerHTML;
    }
  });

  // --- the composer -----------------------------------------------------------------------------------
  function composer() { return document.getElementById("composer"); }
  function text() { return document.getElementById("composer-text"); }

  function syncSendButton() {
    var btn = document.getElementById("composer-send");
    var live = document.getElementById("conv-live");
    var note = document.getElementById("composer-note");
    if (!btn) return;
    if (live) btn.setAttribute("data-blocked", live.getAttribute("data-can-send") === "1" ? "0" : "1");
    var asNote = note && note.checked;
    btn.disabled = btn.getAttribute("data-blocked") === "1" && !asNote;
    btn.textContent = btn.getAttribute(asNote ? "data-label-note" : "data-label-reply");
    var form = composer();
    if (form) form.classList.toggle("as-note", !!asNote);
  }

  function canned() {
    var el = document.getElementById("canned-data");
    if (!el) return [];
    try { return JSON.parse(el.textContent) || []; } catch (e) { return []; }
  }

  function insertAt(ta, start, end, value) {
    ta.value = ta.value.slice(0, start) + value + ta.value.slice(end);
    var caret = start + value.length;
    ta.setSelectionRange(caret, caret);
    ta.focus();
  }

  // The "/word" just before the caret, if any.
  function slashToken(ta) {
    var before = ta.value.slice(0, ta.selectionStart);
    var m = before.match(/(^|\s)\/([^\s\/]*)$/);
    if (!m) return null;
    return { start: before.length - m[2].length - 1, end: ta.selectionStart, word: m[2] };
  }

  function expand(ta) {
    var tok = slashToken(ta);
    if (!tok || !tok.word) return false;
    var word = tok.word.toLowerCase();
    var hit = canned().filter(function (r) { return r.shortcut.toLowerCase() === word; })[0];
    if (!hit) return false;
    insertAt(ta, tok.start, tok.end, hit.body);
    suggest(ta);
    return true;
  }

  function suggest(ta) {
    var box = document.getElementById("canned-suggest");
    if (!box) return;
    var tok = slashToken(ta);
    box.textContent = "";
    if (!tok) { box.hidden = true; return; }
    var word = tok.word.toLowerCase();
    var hits = canned().filter(function (r) { return r.shortcut.toLowerCase().indexOf(word) === 0; }).slice(0, 6);
    hits.forEach(function (r) {
      var li = document.createElement("li");
      var b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.textContent = "/" + r.shortcut + (r.title ? " · " + r.title : "");
      b.addEventListener("click", function () {
        var t = slashToken(ta) || { start: ta.selectionStart, end: ta.selectionStart };
        insertAt(ta, t.start, t.end, r.body);
        box.hidden = true;
      });
      li.appendChild(b);
      box.appendChild(li);
    });
    box.hidden = hits.length === 0;
  }

  document.addEventListener("keydown", function (ev) {
    var ta = ev.target;
    if (ta && ta.id === "composer-text") {
      if ((ev.key === " " || ev.key === "Tab" || ev.key === "Enter") && !ev.ctrlKey && !ev.metaKey && expand(ta)) {
        ev.preventDefault();
        return;
      }
      if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
        ev.preventDefault();
        var btn = document.getElementById("composer-send");
        if (btn && !btn.disabled) composer().requestSubmit(btn);
        return;
      }
      if (ev.key === "Escape") ta.blur();
    }
  }, true);

  document.addEventListener("input", function (ev) {
    if (ev.target && ev.target.id === "composer-text") suggest(ev.target);
  });

  document.addEventListener("change", function (ev) {
    var t = ev.target;
    if (!t) return;
    if (t.id === "composer-note") syncSendButton();
    if (t.id === "canned-pick" && t.value) {
      var hit = canned().filter(function (r) { return r.shortcut === t.value; })[0];
      var ta = text();
      if (hit && ta) insertAt(ta, ta.selectionStart, ta.selectionEnd, hit.body);
      t.value = "";
    }
  });

  // After a reply is accepted the composer empties; after any swap the send button follows the window.
  document.body.addEventListener("inbox:sent", function () {
    var ta = text();
    if (ta) ta.value = "";
    var box = document.getElementById("canned-suggest");
    if (box) box.hidden = true;
  });

  function scrollThread() {
    var t = document.getElementById("thread-messages");
    if (t) t.scrollTop = t.scrollHeight;
  }

  document.addEventListener("htmx:afterSettle", function (ev) {
    var path = pathOf(ev.detail);
    syncSendButton();
    markCurrent();
    if (path.indexOf("/inbox/conversations/") === 0 && !/\/(row|messages)(\?|$)/.test(path)) scrollThread();
  });

  // --- the list: current row, keyboard ------------------------------------------------------------------
  function rows() { var l = list(); return l ? Array.prototype.slice.call(l.querySelectorAll(".conv-row")) : []; }

  function markCurrent() {
    var id = openId();
    rows().forEach(function (r) { r.classList.toggle("current", r.getAttribute("data-conv") === id); });
  }

  function move(step) {
    var all = rows();
    if (!all.length) return;
    var id = openId();
    var at = all.findIndex(function (r) { return r.getAttribute("data-conv") === id; });
    var next = at < 0 ? (step > 0 ? 0 : all.length - 1) : Math.min(all.length - 1, Math.max(0, at + step));
    if (next === at) return;
    var link = all[next].querySelector(".conv-link");
    if (link) { link.click(); link.focus(); all[next].scrollIntoView({ block: "nearest" }); }
  }

  function typing(el) {
    if (!el) return false;
    var tag = el.tagName;
    return tag === "INPUT" || tag === "TEXTAREA" || tag === "SELECT" || el.isContentEditable;
  }

  document.addEventListener("keydown", function (ev) {
    if (ev.defaultPrevented || ev.ctrlKey || ev.metaKey || ev.altKey || typing(ev.target)) return;
    var el;
    switch (ev.key) {
      case "j": move(1); break;
      case "k": move(-1); break;
      case "r": el = text(); if (el) el.focus(); break;
      case "e": el = document.getElementById("btn-resolve"); if (el) el.click(); break;
      case "/": el = document.getElementById("inbox-q"); if (el) el.focus(); break;
      default: return;
    }
    ev.preventDefault();
  });

  syncSendButton();
  scrollThread();
})();
