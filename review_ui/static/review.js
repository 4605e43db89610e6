// The review page without waits, and through a dead spot on a weak line.
//
// The next tasks come with their snippets inside (in the page, in POST /review/renew's reply
// and in each answer's reply) and are decoded while the worker reads the current one; a
// submit shows the next at once while the answer goes to the server in the background.
// The reserve (crowd.offline_reserve tasks besides the one shown, snippets and all) is kept
// in localStorage for this worker only, so that a reload offline goes on: the service worker
// (sw.js, registered here) then serves /review/offline, which this script fills.
// Answers wait in an outbox (localStorage) until the server has them, so a lost connection
// or a closed tab does not lose them; they are sent one at a time, on reconnect and every
// few seconds while any wait, always with the same idempotency key (never recorded twice).
// When the line comes back the page first renews the leases of what it kept: tasks another
// worker took meanwhile are dropped from the reserve, with a word to the worker.
// Sign-out makes the browser forget all of it (Clear-Site-Data, review_ui/signin.py).
// Without this file the page still works: the form posts and the server shows the next task.
(function () {
  "use strict";
  var form = document.getElementById("answer");
  var input = document.getElementById("value");
  if (!form || !input) { return; }
  var OUTBOX = "kerani-outbox";
  var SAVED = "kerani-reserve";
  var SHELL_AT = "kerani-shell-at";
  var RETRY_MS = 10000;
  var worker = form.getAttribute("data-worker");
  var signin = form.getAttribute("data-signin");
  var shell = form.hasAttribute("data-shell");
  var words = JSON.parse(document.getElementById("offline-words").textContent || "{}");
  var card = document.getElementById("task");
  var img = document.getElementById("snippet");
  var net = document.getElementById("net");
  var word = document.getElementById("offline-word");
  var progress = document.getElementById("progress");
  var keyField = form.querySelector("input[name=idempotency_key]");
  var prefilledField = form.querySelector("input[name=prefilled]");
  var csrf = form.querySelector("input[name=csrf]").value;
  var decoding = {};  // task id -> promise that its snippet is decoded
  var timings = window.keraniTimings = [];
  var submitAt = 0;
  var seen = {};      // tasks answered from this page: a late reply must not bring them back
  var notes = { expired: 0, refused: 0 };  // words for the worker, until their next answer
  // Whether the last request reached the server (a phone may say online on a dead line).
  var lineOk = navigator.onLine && !shell;
  // When the task on screen was shown: each answer says how long the worker took over it.
  var shownAt = performance.now();

  function read(key, fallback) {
    try {
      var value = JSON.parse(localStorage.getItem(key));
      return value === null ? fallback : value;
    } catch (e) { return fallback; }
  }
  function write(key, value) {
    try { localStorage.setItem(key, JSON.stringify(value)); } catch (e) { /* full, or private mode */ }
  }
  function say(text, n) { return String(text || "").replace("{n}", String(n)); }
  function counted(one, many, n) { return n === 1 ? words[one] : say(words[many], n); }

  // ---- the outbox: this worker's answers the server does not have yet -------------------
  function outbox() { return read(OUTBOX, []); }
  // Older pages' items name no worker: they were this browser's signed-in worker's.
  function mine() { return outbox().filter(function (o) { return !o.worker || o.worker === worker; }); }
  function taskOf(item) { return item.task_id || item.url.split("/").pop(); }
  function waiting() {
    var ids = {};
    mine().forEach(function (item) { ids[taskOf(item)] = true; });
    return ids;
  }
  function forget(item) {
    write(OUTBOX, outbox().filter(function (o) { return o.key !== item.key; }));
  }

  // ---- the reserve: reserve[0] is the task on screen ------------------------------------
  var upcoming = JSON.parse(document.getElementById("upcoming").textContent || "[]");
  var saved = read(SAVED, null);
  if (saved && saved.worker !== worker) {
    // Another person's tasks (signed out without the browser forgetting): never shown.
    localStorage.removeItem(SAVED);
    saved = null;
  }
  var reserve = [];
  if (!shell) {
    var hint = document.getElementById("hint");
    var note = document.getElementById("note");
    var tip = document.getElementById("field-tip");
    reserve.push({
      help: tip ? tip.textContent : "",
      task_id: form.getAttribute("action").split("/").pop(),
      label: document.getElementById("label").textContent,
      rate: document.getElementById("rate").textContent,
      hint: hint.hidden ? "" : hint.textContent,
      note: note.hidden ? "" : note.textContent,
      ocr_text: prefilledField.value,
      snippet_src: img.getAttribute("src"),
      idempotency_key: keyField.value
    });
    reserve = reserve.concat(upcoming);
  } else if (saved && saved.progress) {
    progress.textContent = saved.progress;
  }
  if (saved) {
    // What the phone kept that the page did not bring (the server sends only three).
    var have = {};
    reserve.forEach(function (t) { have[t.task_id] = true; });
    reserve = reserve.concat(saved.tasks.filter(function (t) { return !have[t.task_id]; }));
  }
  var answering = waiting();
  Object.keys(answering).forEach(function (id) { seen[id] = true; });
  reserve = reserve.filter(function (t) { return !seen[t.task_id]; });

  function keep() { write(SAVED, { worker: worker, tasks: reserve, progress: progress.textContent }); }

  function focusInput() { input.focus(); input.select(); }

  function preload(task) {
    if (decoding[task.task_id]) { return; }
    var picture = new Image();
    picture.src = task.snippet_src;
    decoding[task.task_id] = picture.decode().catch(function () { delete decoding[task.task_id]; });
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    el.textContent = text;
    el.hidden = !text;
  }

  function show(task, afterSubmit) {
    var started = submitAt;
    card.classList.remove("empty");
    img.src = task.snippet_src;
    if (afterSubmit) {
      // How long the worker waited from submit to the next snippet on screen (UI bench).
      img.decode().then(function () { timings.push(performance.now() - started); }, function () {});
    }
    img.alt = task.label;
    document.getElementById("label").textContent = task.label;
    document.getElementById("rate").textContent = task.rate;
    document.title = task.label + " · Kerani";
    setText("hint", task.hint);
    setText("note", task.note);
    var tip = document.getElementById("field-tip");  // the Help by the field: its type's tip
    if (tip && task.help) { tip.textContent = task.help; }
    form.setAttribute("action", "/review/" + task.task_id);
    keyField.value = task.idempotency_key;
    input.value = task.ocr_text;
    prefilledField.value = task.ocr_text;
    shownAt = performance.now();
    focusInput();
  }

  function online() { return navigator.onLine && lineOk; }

  // No task left on the phone: say so, and what happens to the answers waiting.
  function showEmpty() {
    card.classList.add("empty");
    var n = mine().length;
    var text = online() ? words.offline_empty_online : say(words.offline_empty, n);
    document.getElementById("label").textContent = text;
    document.title = "Kerani";
  }

  // The indicator: the line, and the answers the server does not have yet.
  function indicate() {
    var n = mine().length;
    var up = online();
    var state = up ? words.offline_online : words.offline_offline;
    var sent = n ? counted("offline_waiting_one", "offline_waiting", n) : words.offline_all_sent;
    net.textContent = state + " · " + sent;
    net.className = "net" + (up ? "" : " offline") + (n ? " waiting" : "");
    net.setAttribute("data-waiting", String(n));
    net.setAttribute("data-online", up ? "1" : "0");
    net.hidden = false;
    var lines = [];
    if (notes.expired) { lines.push(counted("offline_expired_one", "offline_expired", notes.expired)); }
    if (notes.refused) { lines.push(counted("offline_refused_one", "offline_refused", notes.refused)); }
    word.textContent = lines.join("\n");
    word.hidden = !lines.length;
    if (!reserve.length) { showEmpty(); }
  }

  function setLine(ok) {
    if (lineOk !== ok) { lineOk = ok; indicate(); }
  }

  // ---- talking to the server -----------------------------------------------------------
  function post(url, body) {
    var held = reserve.map(function (t) { return t.task_id; }).concat(Object.keys(waiting()));
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Kerani-Held": held.join(",")
      },
      body: body,
      keepalive: true
    }).then(function (r) { setLine(true); return r; }, function (e) { setLine(false); throw e; });
  }

  var renewLater = null;
  // A renewal in a moment (several reasons at once make one).
  function renewSoon() {
    if (renewLater) { return; }
    renewLater = setTimeout(function () { renewLater = null; renew(); }, 2000);
  }

  // A reply's tasks: ours keep our order (the gone ones dropped), new ones come after.
  function apply(reply) {
    var gone = {};
    (reply.gone || []).forEach(function (id) { gone[id] = true; });
    var before = reserve.length;
    var onScreen = reserve[0] && reserve[0].task_id;
    reserve = reserve.filter(function (t) { return !gone[t.task_id]; });
    notes.expired += before - reserve.length;
    var have = {};
    reserve.forEach(function (t) { have[t.task_id] = true; });
    var busy = waiting();
    var listed = {};
    reply.upcoming.forEach(function (t) {
      listed[t.task_id] = true;
      if (t.snippet_src && !have[t.task_id] && !busy[t.task_id] && !seen[t.task_id]) {
        reserve.push(t);
        have[t.task_id] = true;
      }
    });
    reserve.forEach(preload);
    if (reply.progress) { progress.textContent = reply.progress; }
    keep();
    if (reserve.length && reserve[0].task_id !== onScreen) { show(reserve[0], false); }
    indicate();
    // An answer's reply lists the leases held now: one we keep that it does not list may
    // have lapsed. The renewal says whether it is still ours (and makes it so) or gone.
    if (!reply.gone && reserve.some(function (t) { return !listed[t.task_id]; })) { renewSoon(); }
  }

  function bodyOf(item) {
    var data = new URLSearchParams(item.body || "");
    if (item.fields) {
      Object.keys(item.fields).forEach(function (k) { data.set(k, item.fields[k]); });
    }
    data.set("csrf", csrf);  // this page's session: an answer typed before a sign-in again
    return data.toString();
  }

  // One answer: true once the server has it (or refused it for good), false to try later.
  function send(item) {
    return post(item.url || "/review/" + item.task_id, bodyOf(item)).then(function (r) {
      if (r.status === 401) { location.href = "/signin"; return false; }  // kept for after
      if (r.status >= 500) { return false; }
      forget(item);
      if (r.ok) { return r.json().then(function (reply) { apply(reply); return true; }); }
      return r.json().catch(function () { return {}; }).then(function (refusal) {
        if (refusal.key === "not_your_task" || refusal.key === "lease_expired") {
          // Typed too late: someone else has that task now. Say so, and go on; the
          // renewal finds out what else of the reserve went the same way.
          notes.refused += 1;
          indicate();
          renewSoon();
          return true;
        }
        // Refused for another reason (the account was paused, the form expired): let the
        // server show where things stand.
        location.reload();
        return false;
      });
    }, function () { return false; });
  }

  var flushing = null;
  // The answers waiting, one at a time and in order, until none is left or the line fails.
  function flush() {
    if (flushing) { return flushing; }
    function next() {
      var items = mine();
      if (!items.length) { return Promise.resolve(true); }
      return send(items[0]).then(function (done) { return done ? next() : false; });
    }
    flushing = next().then(function (done) { flushing = null; indicate(); return done; },
      function () { flushing = null; indicate(); return false; });
    return flushing;
  }

  var renewing = null;
  // Back online (or the page loaded): renew what the phone kept, learn what is gone, top up.
  function renew() {
    if (renewing) { return renewing; }
    var body = new URLSearchParams();
    body.set("csrf", csrf);
    body.set("waiting", Object.keys(waiting()).join(","));
    body.set("held", reserve.map(function (t) { return t.task_id; }).join(","));
    renewing = post("/review/renew", body.toString()).then(function (r) {
      if (r.status === 401) { location.href = "/signin"; return false; }
      if (r.status === 403) { location.reload(); return false; }  // paused: the server says so
      if (!r.ok) { return false; }
      return r.json().then(function (reply) { apply(reply); return true; });
    }, function () { return false; }).then(function (ok) { renewing = null; return ok; });
    return renewing;
  }

  function reconnect() {
    return renew().then(function () { return flush(); }).then(function (done) {
      // Nothing left here and nothing waiting: the server shows the next task, or says
      // there is none.
      if (done && online() && !reserve.length && !mine().length) { location.href = "/review"; }
    });
  }

  // ---- the worker's actions ------------------------------------------------------------
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (!reserve.length) { return; }
    submitAt = performance.now();
    var task = reserve[0];
    var item = {
      worker: worker,
      task_id: task.task_id,
      key: keyField.value,
      fields: {
        idempotency_key: keyField.value,
        action: (e.submitter && e.submitter.value) || "value",
        value: input.value,
        prefilled: prefilledField.value,
        duration_ms: String(Math.round(performance.now() - shownAt))
      }
    };
    write(OUTBOX, outbox().concat([item]));
    seen[task.task_id] = true;
    reserve.shift();
    notes.expired = 0;
    notes.refused = 0;
    keep();
    if (reserve.length) { show(reserve[0], true); }
    indicate();
    flush().then(function (done) {
      if (done && !reserve.length && online()) { reconnect(); }
    });
  });

  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && reserve.length) { document.getElementById("skip").click(); }
  });

  // Sign-out makes the browser forget the outbox: send what waits first, or say why not.
  var signout = document.querySelector("form[action='/signout']");
  if (signout) {
    signout.addEventListener("submit", function (e) {
      if (!mine().length) { return; }
      e.preventDefault();
      flush().then(function (done) {
        if (done) { signout.submit(); return; }
        word.textContent = words.offline_signout_wait;
        word.hidden = false;
        // The menu the button is in would cover the word.
        var menu = signout.closest("details");
        if (menu) { menu.open = false; }
      });
    });
  }

  window.addEventListener("online", function () { reconnect(); });
  window.addEventListener("offline", function () { lineOk = false; indicate(); });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") { reconnect(); }
  });
  // While answers wait or the line is down: try again every few seconds.
  setInterval(function () {
    if ((mine().length || !lineOk) && navigator.onLine) { reconnect(); }
  }, RETRY_MS);

  // The service worker opens this page offline; one cache per sign-in (sw.js).
  if ("serviceWorker" in navigator && signin) {
    navigator.serviceWorker.register("/sw.js?s=" + encodeURIComponent(signin), { scope: "/" })
      .then(function (registration) {
        // Now and then, and after a change of language, the shell again (online only).
        var last = read(SHELL_AT, {});
        var lang = document.documentElement.lang;
        var stale = last.lang !== lang || Date.now() - (last.at || 0) > 3600 * 1000;
        if (!shell && stale && registration.active) {
          registration.active.postMessage("refresh");
          write(SHELL_AT, { at: Date.now(), lang: lang });
        }
      }).catch(function () { /* no service worker: the page works online as before */ });
  }

  // ---- start ---------------------------------------------------------------------------
  if (reserve.length) {
    var domTask = form.getAttribute("action").split("/").pop();
    if (shell || reserve[0].task_id !== domTask) { show(reserve[0], false); } else { focusInput(); }
  }
  keep();
  reserve.forEach(preload);
  indicate();
  reconnect();
})();
