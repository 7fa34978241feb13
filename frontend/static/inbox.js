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
  var pending = {};  // conversation id → {moved: bool}; `alert`: the alert this burst raises
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
    var alert = ids.alert;
    delete ids.alert;
    if (alert) raise(alert.kind, alert.id);
    Object.keys(ids).forEach(function (id) {
      refreshRow(id, ids[id].moved);
      if (openId() === id) {
        var live = document.getElementById("conv-live");
        if (live) htmx.trigger(live, "inbox:refresh");
      }
    });
    refreshCounts();
  }

  // --- alerts: a sound and a desktop notification for new work, the unread count in the tab title ------
  var baseTitle = document.title;
  var audio = null;

  function alertsEl() { return document.getElementById("alerts"); }
  function alertOn(name) { var el = alertsEl(); return !!el && el.getAttribute("data-" + name) === "1"; }

  // Browsers let a page make sound only after the person interacted with it: the audio context is
  // created (or resumed) on their first click or key press.
  function wakeAudio() {
    var Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx) return;
    if (!audio) audio = new Ctx();
    if (audio.state === "suspended") audio.resume();
  }
  document.addEventListener("pointerdown", wakeAudio, true);
  document.addEventListener("keydown", wakeAudio, true);

  function chime() {
    if (!audio || audio.state !== "running") return;
    var t = audio.currentTime;
    [880, 1320].forEach(function (hz, i) {
      var osc = audio.createOscillator();
      var gain = audio.createGain();
      osc.frequency.value = hz;
      gain.gain.setValueAtTime(0.0001, t + i * 0.15);
      gain.gain.exponentialRampToValueAtTime(0.2, t + i * 0.15 + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, t + i * 0.15 + 0.25);
      osc.connect(gain);
      gain.connect(audio.destination);
      osc.start(t + i * 0.15);
      osc.stop(t + i * 0.15 + 0.3);
    });
  }

  function notify(kind, id) {
    if (!("Notification" in window) || Notification.permission !== "granted") return;
    var el = alertsEl();
    var body = el ? el.getAttribute(kind === "assigned" ? "data-text-assigned" : "data-text-message") : "";
    var n = new Notification(baseTitle, { body: body, tag: "siyu-conversation-" + id });
    n.onclick = function () {
      window.focus();
      var link = document.querySelector("#conv-row-" + id + " .conv-link");
      if (link) link.click(); else window.location.href = "/inbox/conversations/" + id;
      n.close();
    };
  }

  // One alert per burst of changes; none for the conversation the rep is looking at in a focused tab.
  function raise(kind, id) {
    var watching = openId() === id && !document.hidden && document.hasFocus();
    root.setAttribute("data-last-alert", kind + ":" + id + (watching ? ":watching" : ""));
    if (watching) return;
    if (alertOn("sound")) chime();
    if (alertOn("desktop")) notify(kind, id);
  }

  function showUnreadInTitle() {
    var badge = document.querySelector("#inbox-boxes a[data-box='mine'] .unread-badge");
    var n = badge ? badge.textContent.trim() : "";
    document.title = n && n !== "0" ? "(" + n + ") " + baseTitle : baseTitle;
  }

  function showBlocked() {
    var blocked = document.getElementById("alert-blocked");
    if (blocked) blocked.hidden = !(alertOn("desktop") && "Notification" in window && Notification.permission === "denied");
  }

  // Switching desktop notifications on asks the browser's permission (it needs that click).
  document.addEventListener("click", function (ev) {
    var btn = ev.target.closest && ev.target.closest("#alert-desktop");
    if (!btn || btn.value !== "1" || !("Notification" in window)) return;
    if (Notification.permission === "default") Notification.requestPermission().then(showBlocked);
  });

  function onConversation(data) {
    var id = String(data.id);
    if (data.alert) {
      var alerted = pending.alert || null;
      if (!alerted || data.alert === "assigned") pending.alert = { kind: data.alert, id: id };
    }
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

  function exactHit(word) {
    var w = (word || "").toLowerCase();
    return canned().filter(function (r) { return r.shortcut.toLowerCase() === w; })[0];
  }

  // A "/word" just before the caret that is exactly a shortcut becomes its text.
  function expand(ta) {
    var tok = slashToken(ta);
    var hit = tok && tok.word && exactHit(tok.word);
    if (!hit) return false;
    insertAt(ta, tok.start, tok.end, hit.body);
    closeSuggestions();
    return true;
  }

  // The suggestion list: arrow keys move, Enter or Tab (or a click) picks, Escape closes.
  var suggestion = { hits: [], active: 0 };

  function suggestBox() { return document.getElementById("canned-suggest"); }

  function closeSuggestions() {
    suggestion.hits = [];
    var box = suggestBox();
    if (box) { box.textContent = ""; box.hidden = true; }
    var ta = text();
    if (ta) ta.removeAttribute("aria-activedescendant");
  }

  function suggestionsOpen() {
    var box = suggestBox();
    return !!(box && !box.hidden && suggestion.hits.length);
  }

  function pick(ta, r) {
    var t = slashToken(ta) || { start: ta.selectionStart, end: ta.selectionStart };
    insertAt(ta, t.start, t.end, r.body);
    closeSuggestions();
  }

  function showActive() {
    var box = suggestBox();
    var ta = text();
    if (!box) return;
    Array.prototype.forEach.call(box.children, function (li, i) {
      var on = i === suggestion.active;
      li.classList.toggle("active", on);
      li.setAttribute("aria-selected", on ? "true" : "false");
      if (on && ta) ta.setAttribute("aria-activedescendant", li.id);
    });
  }

  function suggest(ta) {
    var box = suggestBox();
    if (!box) return;
    var tok = slashToken(ta);
    if (!tok) { closeSuggestions(); return; }
    var word = tok.word.toLowerCase();
    var hits = canned().filter(function (r) { return r.shortcut.toLowerCase().indexOf(word) === 0; }).slice(0, 6);
    box.textContent = "";
    suggestion.hits = hits;
    suggestion.active = 0;
    hits.forEach(function (r, i) {
      var li = document.createElement("li");
      li.id = "canned-option-" + i;
      li.setAttribute("role", "option");
      li.className = "canned-option";
      var name = document.createElement("strong");
      name.textContent = "/" + r.shortcut;
      var rest = document.createElement("span");
      rest.className = "muted";
      rest.textContent = " " + (r.title || r.body).slice(0, 60);
      li.appendChild(name);
      li.appendChild(rest);
      li.addEventListener("mousedown", function (ev) { ev.preventDefault(); pick(ta, r); });
      box.appendChild(li);
    });
    box.hidden = hits.length === 0;
    showActive();
  }

  function send() {
    var btn = document.getElementById("composer-send");
    if (btn && !btn.disabled) composer().requestSubmit(btn);
  }

  document.addEventListener("keydown", function (ev) {
    var ta = ev.target;
    if (!ta || ta.id !== "composer-text") return;
    if (suggestionsOpen()) {
      var n = suggestion.hits.length;
      if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        suggestion.active = (suggestion.active + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
        showActive();
        ev.preventDefault();
        return;
      }
      if (ev.key === "Enter" || ev.key === "Tab") {  // Ctrl+Enter too: a pick first, never "/shortcut" sent
        pick(ta, suggestion.hits[suggestion.active]);
        ev.preventDefault();
        return;
      }
      if (ev.key === "Escape") {
        closeSuggestions();
        ev.preventDefault();
        return;
      }
    }
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) {
      ev.preventDefault();
      if (!expand(ta)) send();  // an exact shortcut becomes its text first; the next Ctrl+Enter sends it
      return;
    }
    if ((ev.key === " " || ev.key === "Tab" || ev.key === "Enter") && !ev.shiftKey && expand(ta)) {
      ev.preventDefault();
      return;
    }
    if (ev.key === "Escape") ta.blur();
  }, true);

  document.addEventListener("input", function (ev) {
    if (ev.target && ev.target.id === "composer-text") { suggest(ev.target); countNotice(); }
  });
  document.addEventListener("focusout", function (ev) {
    if (ev.target && ev.target.id === "composer-text") closeSuggestions();
  });

  // The service notice takes the reply box's text, up to the template's limit: counted as the rep types
  // (spaces run together, as the server counts), and the button waits until it fits.
  function countNotice() {
    var btn = document.getElementById("notice-send");
    var count = document.getElementById("notice-count");
    var ta = text();
    if (!btn || !count || !ta) return;
    var max = parseInt(btn.getAttribute("data-max"), 10) || 0;
    var n = ta.value.trim().split(/\s+/).join(" ").length;
    count.textContent = n + " / " + max;
    var over = n > max;
    count.classList.toggle("over", over);
    btn.disabled = n === 0 || over;
    btn.title = over ? count.getAttribute("data-over") : (n === 0 ? count.getAttribute("data-empty") : "");
  }

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
    closeSuggestions();
    countNotice();
  });

  function scrollThread() {
    var t = document.getElementById("thread-messages");
    if (t) t.scrollTop = t.scrollHeight;
  }

  document.addEventListener("htmx:afterSettle", function (ev) {
    var path = pathOf(ev.detail);
    syncSendButton();
    countNotice();
    showUnreadInTitle();
    showBlocked();
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
  countNotice();
  showUnreadInTitle();
  showBlocked();
  scrollThread();
})();
