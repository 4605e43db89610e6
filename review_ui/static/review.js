// The review page without waits: the next tasks come with their snippets inside (in the page,
// then in each answer's reply) and are decoded while the worker reads the current one; a
// submit shows the next at once while the answer goes to the server in the background.
// Answers wait in an outbox (localStorage) until the server has them, so a lost connection
// or a closed tab does not lose them; retries reuse the idempotency key.
// Without this file the page still works: the form posts and the server shows the next task.
(function () {
  "use strict";
  var form = document.getElementById("answer");
  var input = document.getElementById("value");
  if (!form || !input) { return; }
  var OUTBOX = "kerani-outbox";
  var img = document.getElementById("snippet");
  var keyField = form.querySelector("input[name=idempotency_key]");
  var prefilledField = form.querySelector("input[name=prefilled]");
  var current = form.getAttribute("action").split("/").pop();
  var upcoming = JSON.parse(document.getElementById("upcoming").textContent || "[]");
  var decoding = {};  // task id -> promise that its snippet is decoded
  var ready = {};   // task id -> snippet URL, once decoded
  var timings = window.keraniTimings = [];
  var submitAt = 0;
  var seen = {};    // tasks shown already: a late reply must not bring them back
  // When the task on screen was shown: each answer says how long the worker took over it.
  var shownAt = performance.now();

  function tookMs() { return String(Math.round(performance.now() - shownAt)); }

  function focusInput() { input.focus(); input.select(); }
  focusInput();

  function preload(task) {
    if (decoding[task.task_id]) { return; }
    var picture = new Image();
    picture.src = task.snippet_src;
    decoding[task.task_id] = picture.decode()
      .then(function () { ready[task.task_id] = task.snippet_src; })
      .catch(function () { delete decoding[task.task_id]; });
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    el.textContent = text;
    el.hidden = !text;
  }

  function show(task) {
    var started = submitAt;
    img.src = ready[task.task_id];
    // How long the worker waited from submit to the next snippet on screen (for the UI bench).
    img.decode().then(function () { timings.push(performance.now() - started); }, function () {});
    img.alt = task.label;
    document.getElementById("label").textContent = task.label;
    document.getElementById("rate").textContent = task.rate;
    document.title = task.label + " · Kerani";
    setText("hint", task.hint);
    setText("note", task.note);
    form.setAttribute("action", "/review/" + task.task_id);
    keyField.value = task.idempotency_key;
    input.value = task.ocr_text;
    prefilledField.value = task.ocr_text;
    shownAt = performance.now();
    seen[current] = true;
    current = task.task_id;
    delete ready[task.task_id];
    focusInput();
  }

  function outbox() {
    try { return JSON.parse(localStorage.getItem(OUTBOX) || "[]"); } catch (e) { return []; }
  }
  function saveOutbox(items) {
    try { localStorage.setItem(OUTBOX, JSON.stringify(items)); } catch (e) { /* private mode */ }
  }
  function forget(item) {
    saveOutbox(outbox().filter(function (o) { return o.key !== item.key; }));
  }

  function send(item, attempt) {
    return fetch(item.url, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Accept": "application/json",
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Kerani-Held": [current].concat(upcoming.map(function (t) { return t.task_id; })).join(",")
      },
      body: item.body,
      keepalive: true
    }).then(function (r) {
      if (r.status === 401) { location.href = "/signin"; return null; }
      if (r.status >= 500) { throw new Error(r.status); }
      forget(item);  // recorded, or refused for good (a 4xx will not change on retry)
      // Refused (the task was no longer this worker's, or the account was paused): let the
      // server show where things stand.
      if (!r.ok) { location.reload(); return null; }
      return r.json();
    }).then(function (reply) {
      if (!reply) { return; }
      // The server's reserve, in order; tasks we have already come without their snippet.
      var have = {};
      upcoming.forEach(function (t) { have[t.task_id] = t; });
      upcoming = reply.upcoming.map(function (t) { return t.snippet_src ? t : have[t.task_id]; })
        .filter(function (t) { return t && t.task_id !== current && !seen[t.task_id]; });
      upcoming.forEach(preload);
      document.getElementById("progress").textContent = reply.progress;
    }).catch(function () {
      // Offline or a server hiccup: try again with the same key (never recorded twice).
      var wait = Math.min(30000, 1000 * Math.pow(2, attempt || 0));
      setTimeout(function () { send(item, (attempt || 0) + 1); }, wait);
    });
  }

  var inflight = Promise.resolve();  // the latest answer's round trip, which brings the next task
  var bypass = false;

  function answer(e, next, took) {
    submitAt = performance.now();
    var data = new FormData(form);
    data.set("action", (e.submitter && e.submitter.value) || "value");
    data.set("duration_ms", took);
    var item = { url: form.getAttribute("action"), body: new URLSearchParams(data).toString(), key: keyField.value };
    saveOutbox(outbox().concat([item]));
    upcoming = upcoming.filter(function (t) { return t.task_id !== next.task_id; });
    show(next);
    inflight = send(item, 0);
  }

  // Strictly in the server's order, so that a reload shows the task that was on screen.
  function readyTask() { return upcoming[0] && ready[upcoming[0].task_id] ? upcoming[0] : null; }

  form.addEventListener("submit", function (e) {
    if (bypass) { return; }
    e.preventDefault();
    var took = tookMs();  // the worker's time ends at the tap, not when the next task is in
    var next = readyTask();
    if (next) { answer(e, next, took); return; }
    // The next task is still on its way (a fast worker, a slow line): wait a little for it,
    // else post the form the plain way and let the server show the next task.
    var submitter = e.submitter;
    var timeout = new Promise(function (resolve) { setTimeout(resolve, 3000); });
    Promise.race([inflight.then(function () {
      return Promise.all(upcoming.map(function (t) { return decoding[t.task_id]; }));
    }), timeout])
      .then(function () {
        var late = readyTask();
        if (late) { answer({ submitter: submitter }, late, took); return; }
        bypass = true;
        var field = document.createElement("input");
        field.type = "hidden";
        field.name = "duration_ms";
        field.value = took;
        form.appendChild(field);
        if (form.requestSubmit) { form.requestSubmit(submitter); } else { form.submit(); }
      });
  });

  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { document.getElementById("skip").click(); }
  });

  // Answers a closed tab or a lost connection left behind go first; if one of them was for
  // the task on screen, the server has moved on: load the page again.
  var pending = outbox();
  Promise.all(pending.map(function (item) { return send(item, 0); })).then(function () {
    if (pending.some(function (item) { return item.url === "/review/" + current; })) {
      location.reload();
    }
  });
  upcoming.forEach(preload);
})();
