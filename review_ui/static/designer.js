// The template designer: draw, move and resize field boxes on a sample scan with mouse,
// pen or touch (Pointer Events), nudge the selected box with the arrow keys, accept the
// fields proposed from the sample's printed labels, try the template on the samples and
// save it. Boxes are kept in the sample's pixels (the template's page_size); the page only
// scales them for the screen. Nothing here is loaded from another host.
(function () {
  "use strict";
  var root = document.getElementById("designer");
  if (!root) { return; }
  var csrf = root.dataset.csrf;
  var msg = function (key) { return root.dataset["msg" + key] || key; };
  var $ = function (id) { return document.getElementById(id); };
  var stage = $("stage"), overlay = $("overlay"), img = $("sample"), viewport = $("viewport");
  var state = {
    fields: [], rules: [], samples: [], proposals: [], anchorWords: [],
    selected: -1, zoom: 1, drawing: false
  };
  var MIN_BOX = 8;

  function show(id, text) {
    var el = $(id);
    el.textContent = text || "";
    el.hidden = !text;
  }
  function error(text) { show("message", text); }
  function status(text) { show("status", text); }

  function start(data) {
    if (!data) { return; }
    $("tpl-name").value = data.name || "";
    $("tpl-title-en").value = (data.title || {}).en || "";
    $("tpl-title-ms").value = (data.title || {}).ms || "";
    state.fields = (data.fields || []).map(function (f) {
      var copy = Object.assign({}, f);
      copy.box = (f.box || f.region).slice();
      delete copy.region;
      return copy;
    });
    state.rules = data.rules || [];
  }

  // ---- the stage -------------------------------------------------------------------------
  function fit() {
    if (!state.samples.length) { return; }
    var width = state.samples[0].width;
    state.zoom = Math.max(0.1, (viewport.clientWidth - 4) / width);
    layout();
  }
  function layout() {
    if (!state.samples.length) { return; }
    stage.style.width = Math.round(state.samples[0].width * state.zoom) + "px";
    draw();
  }
  function place(el, box) {
    var z = state.zoom;
    el.style.left = box[0] * z + "px";
    el.style.top = box[1] * z + "px";
    el.style.width = (box[2] - box[0]) * z + "px";
    el.style.height = (box[3] - box[1]) * z + "px";
  }
  function draw() {
    overlay.textContent = "";
    state.proposals.forEach(function (p) {
      var el = document.createElement("div");
      el.className = "proposal";
      place(el, p.box);
      overlay.appendChild(el);
    });
    state.fields.forEach(function (f, i) {
      var el = document.createElement("div");
      el.className = "box" + (i === state.selected ? " selected" : "");
      el.dataset.index = String(i);
      el.setAttribute("role", "button");
      el.setAttribute("aria-label", f.name);
      var name = document.createElement("span");
      name.textContent = f.name;
      el.appendChild(name);
      if (i === state.selected) {
        var handle = document.createElement("div");
        handle.className = "handle";
        handle.dataset.index = String(i);
        el.appendChild(handle);
      }
      place(el, f.box);
      overlay.appendChild(el);
    });
    anchorsShown().forEach(function (a) {
      var dot = document.createElement("div");
      dot.className = "anchor";
      dot.title = a.text;
      dot.style.left = a.x * state.zoom + "px";
      dot.style.top = a.y * state.zoom + "px";
      overlay.appendChild(dot);
    });
    lists();
  }
  // The anchors the server will choose: the sample's confident unique words outside fields.
  function anchorsShown() {
    return state.anchorWords.filter(function (a) {
      return !state.fields.some(function (f) {
        var b = f.box;
        return b[0] <= a.x && a.x <= b[2] && b[1] <= a.y && a.y <= b[3];
      });
    });
  }

  function pagePoint(event) {
    var r = stage.getBoundingClientRect();
    return [(event.clientX - r.left) / state.zoom, (event.clientY - r.top) / state.zoom];
  }
  function clampBox(b) {
    var s = state.samples[0];
    var x0 = Math.max(0, Math.min(b[0], b[2])), x1 = Math.min(s.width, Math.max(b[0], b[2]));
    var y0 = Math.max(0, Math.min(b[1], b[3])), y1 = Math.min(s.height, Math.max(b[1], b[3]));
    return [Math.round(x0), Math.round(y0), Math.round(x1), Math.round(y1)];
  }

  var drag = null;
  stage.addEventListener("pointerdown", function (event) {
    if (!state.samples.length || event.button > 0) { return; }
    var target = event.target;
    var at = pagePoint(event);
    if (target.classList.contains("handle")) {
      drag = { mode: "resize", index: Number(target.dataset.index), from: at };
    } else if (target.closest(".box")) {
      var index = Number(target.closest(".box").dataset.index);
      select(index);
      drag = { mode: "move", index: index, from: at, box: state.fields[index].box.slice() };
    } else if (state.drawing) {
      drag = { mode: "new", from: at, index: -1 };
    } else {
      return;  // let a finger scroll the page when not drawing
    }
    if (drag.mode === "resize") { drag.box = state.fields[drag.index].box.slice(); }
    stage.setPointerCapture(event.pointerId);
    event.preventDefault();
  });
  stage.addEventListener("pointermove", function (event) {
    if (!drag) { return; }
    var at = pagePoint(event);
    var dx = at[0] - drag.from[0], dy = at[1] - drag.from[1];
    if (drag.mode === "new") {
      if (Math.abs(dx) < MIN_BOX && Math.abs(dy) < MIN_BOX) { return; }
      if (drag.index < 0) {
        state.fields.push(newField([drag.from[0], drag.from[1], at[0], at[1]]));
        drag.index = state.fields.length - 1;
        state.selected = drag.index;
      }
      state.fields[drag.index].box = clampBox([drag.from[0], drag.from[1], at[0], at[1]]);
    } else if (drag.mode === "move") {
      var b = drag.box, s = state.samples[0];
      var mx = Math.max(-b[0], Math.min(dx, s.width - b[2]));
      var my = Math.max(-b[1], Math.min(dy, s.height - b[3]));
      state.fields[drag.index].box = clampBox([b[0] + mx, b[1] + my, b[2] + mx, b[3] + my]);
    } else {
      var r = drag.box;
      state.fields[drag.index].box = clampBox(
        [r[0], r[1], Math.max(r[0] + MIN_BOX, r[2] + dx), Math.max(r[1] + MIN_BOX, r[3] + dy)]);
    }
    draw();
    form();
  });
  function endDrag() { drag = null; }
  stage.addEventListener("pointerup", endDrag);
  stage.addEventListener("pointercancel", endDrag);

  document.addEventListener("keydown", function (event) {
    var tag = (event.target.tagName || "").toLowerCase();
    if (state.selected < 0 || tag === "input" || tag === "select" || tag === "textarea") {
      return;
    }
    var step = event.shiftKey ? 10 : 1;
    var d = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (!d[event.key]) { return; }
    var f = state.fields[state.selected], s = state.samples[0];
    var mx = Math.max(-f.box[0], Math.min(d[event.key][0], s.width - f.box[2]));
    var my = Math.max(-f.box[1], Math.min(d[event.key][1], s.height - f.box[3]));
    f.box = [f.box[0] + mx, f.box[1] + my, f.box[2] + mx, f.box[3] + my];
    event.preventDefault();
    draw();
    form();
  });

  // ---- fields ----------------------------------------------------------------------------
  function uniqueName(base) {
    var name = base, n = 2;
    var taken = function (x) { return state.fields.some(function (f) { return f.name === x; }); };
    while (taken(name)) { name = base + "_" + n; n += 1; }
    return name;
  }
  function newField(box) {
    return {
      name: uniqueName("field_" + (state.fields.length + 1)),
      label: { en: "", ms: "" }, type: "text", box: clampBox(box),
      required: true, sensitivity: "personal"
    };
  }
  function select(index) {
    state.selected = index;
    draw();
    form();
  }
  function lists() {
    var list = $("field-list");
    list.textContent = "";
    state.fields.forEach(function (f, i) {
      var li = document.createElement("li");
      if (i === state.selected) { li.className = "selected"; }
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = f.name + " (" + f.type + ")";
      b.addEventListener("click", function () { select(i); });
      li.appendChild(b);
      list.appendChild(li);
    });
    var props = $("proposals");
    props.textContent = "";
    state.proposals.forEach(function (p, i) {
      var li = document.createElement("li");
      var text = document.createElement("span");
      text.textContent = p.label_text + " → " + p.name + " (" + p.type + ")";
      var b = document.createElement("button");
      b.type = "button";
      b.className = "accept";
      b.textContent = msg("Accept");
      b.addEventListener("click", function () { accept(i); });
      li.appendChild(text);
      li.appendChild(b);
      props.appendChild(li);
    });
    $("accept-all").hidden = !state.proposals.length;
    var rules = $("rule-list");
    rules.textContent = "";
    state.rules.forEach(function (r, i) {
      var li = document.createElement("li");
      var text = document.createElement("span");
      text.textContent = r.name + ": " + r.check;
      var b = document.createElement("button");
      b.type = "button";
      b.textContent = "×";
      b.setAttribute("aria-label", r.name);
      b.addEventListener("click", function () { state.rules.splice(i, 1); lists(); });
      li.appendChild(text);
      li.appendChild(b);
      rules.appendChild(li);
    });
    ["r-a", "r-b"].forEach(function (id) {
      var sel = $(id), was = sel.value;
      sel.textContent = "";
      state.fields.forEach(function (f) {
        var o = document.createElement("option");
        o.value = o.textContent = f.name;
        sel.appendChild(o);
      });
      sel.value = was;
    });
  }
  function accept(i) {
    var p = state.proposals.splice(i, 1)[0];
    var f = {
      name: uniqueName(p.name), label: p.label, type: p.type, box: p.box.slice(),
      required: true, sensitivity: p.sensitivity
    };
    if (p.format_hint) { f.format_hint = p.format_hint; }
    if (p.checksum) { f.checksum = p.checksum; }
    state.fields.push(f);
    select(state.fields.length - 1);
  }
  $("accept-all").addEventListener("click", function () {
    while (state.proposals.length) { accept(0); }
  });

  var inputs = {
    "f-name": "name", "f-type": "type", "f-sensitivity": "sensitivity", "f-hint": "format_hint",
    "f-pattern": "pattern", "f-checksum": "checksum"
  };
  function form() {
    var f = state.fields[state.selected];
    $("field-form").hidden = !f;
    if (!f) { return; }
    Object.keys(inputs).forEach(function (id) {
      if (document.activeElement !== $(id)) { $(id).value = f[inputs[id]] || ""; }
    });
    $("f-label-en").value = f.label.en;
    $("f-label-ms").value = f.label.ms;
    $("f-required").checked = f.required !== false;
    $("f-min").value = f.range && f.range.min != null ? f.range.min : "";
    $("f-max").value = f.range && f.range.max != null ? f.range.max : "";
    $("f-allowed").value = (f.allowed || []).join(", ");
    ["x0", "y0", "x1", "y1"].forEach(function (k, j) { $("f-" + k).value = f.box[j]; });
    Array.prototype.forEach.call($("f-dates").querySelectorAll("input"), function (c) {
      c.checked = (f.date_formats || []).indexOf(c.value) >= 0;
    });
    $("f-dates").hidden = f.type !== "date";
  }
  $("field-form").addEventListener("input", function (event) {
    var f = state.fields[state.selected];
    if (!f) { return; }
    var id = event.target.id;
    if (inputs[id]) {
      if (event.target.value) { f[inputs[id]] = event.target.value; } else { delete f[inputs[id]]; }
      if (id === "f-name") { f.name = event.target.value; }
    } else if (id === "f-label-en") { f.label.en = event.target.value; }
    else if (id === "f-label-ms") { f.label.ms = event.target.value; }
    else if (id === "f-required") { f.required = event.target.checked; }
    else if (id === "f-min" || id === "f-max") {
      var lo = $("f-min").value.trim(), hi = $("f-max").value.trim();
      if (lo || hi) { f.range = {}; if (lo) { f.range.min = lo; } if (hi) { f.range.max = hi; } }
      else { delete f.range; }
    } else if (id === "f-allowed") {
      var values = event.target.value.split(",").map(function (v) { return v.trim(); })
        .filter(Boolean);
      if (values.length) { f.allowed = values; } else { delete f.allowed; }
    } else if (/^f-[xy][01]$/.test(id)) {
      var box = ["x0", "y0", "x1", "y1"].map(function (k) { return Number($("f-" + k).value); });
      f.box = clampBox(box);
    } else if (event.target.closest("#f-dates")) {
      var picked = Array.prototype.filter.call($("f-dates").querySelectorAll("input"),
        function (c) { return c.checked; }).map(function (c) { return c.value; });
      if (picked.length) { f.date_formats = picked; } else { delete f.date_formats; }
    }
    draw();
    $("f-dates").hidden = f.type !== "date";
  });
  $("f-remove").addEventListener("click", function () {
    state.fields.splice(state.selected, 1);
    select(-1);
  });

  $("rule-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var check = $("r-check").value, a = $("r-a").value;
    var b = Array.prototype.map.call($("r-b").selectedOptions, function (o) { return o.value; });
    var name = $("r-name").value || check + "_" + (state.rules.length + 1);
    var rule = { name: name, check: check };
    if (check === "ic_birth_date") { rule.ic = a; rule.date = b[0]; }
    else if (check === "date_order") { rule.earlier = a; rule.later = b[0]; }
    else { rule.total = a; rule.items = b; }
    state.rules.push(rule);
    $("r-name").value = "";
    lists();
  });

  // ---- the server ------------------------------------------------------------------------
  function template() {
    var fields = state.fields.map(function (f) {
      var out = {};
      Object.keys(f).forEach(function (k) {
        if (f[k] !== "" && f[k] !== undefined && f[k] !== null) { out[k] = f[k]; }
      });
      return out;
    });
    var t = {
      name: $("tpl-name").value.trim(),
      title: { en: $("tpl-title-en").value.trim(), ms: $("tpl-title-ms").value.trim() },
      fields: fields
    };
    if (state.rules.length) { t.rules = state.rules; }
    return t;
  }
  function post(url, body) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Accept": "application/json", "Content-Type": "application/json",
                 "X-CSRF-Token": csrf },
      body: JSON.stringify(body)
    }).then(answer);
  }
  function answer(response) {
    return response.json().catch(function () { return { error: response.statusText }; })
      .then(function (data) {
        if (!response.ok) { throw new Error(data.error || response.statusText); }
        return data;
      });
  }
  function samples() { return state.samples.map(function (s) { return s.token; }); }

  $("upload").addEventListener("submit", function (event) {
    event.preventDefault();
    var file = $("sample-file").files[0];
    if (!file) { return; }
    var data = new FormData();
    data.append("csrf", csrf);
    data.append("file", file);
    error("");
    status(msg("Uploading"));
    fetch("/templates/samples", {
      method: "POST", credentials: "same-origin", headers: { "Accept": "application/json" },
      body: data
    }).then(answer).then(function (s) {
      state.samples.push({ token: s.sample, width: s.width, height: s.height, name: file.name });
      if (state.samples.length > 3) { state.samples.shift(); }
      if (state.samples.length === 1 || state.samples[0].token === s.sample) {
        state.proposals = s.proposals.filter(function (p) {
          return !state.fields.some(function (f) { return f.name === p.name; });
        });
        state.anchorWords = s.anchor_words;
        img.src = "/templates/samples/" + s.sample;
      }
      var li = document.createElement("li");
      li.textContent = file.name + " (" + s.width + "×" + s.height + ")";
      $("samples").appendChild(li);
      status("");
      $("sample-file").value = "";
    }).catch(function (e) { status(""); error(e.message); });
  });
  img.addEventListener("load", fit);
  window.addEventListener("resize", fit);
  $("zoom-in").addEventListener("click", function () { state.zoom *= 1.25; layout(); });
  $("zoom-out").addEventListener("click", function () { state.zoom /= 1.25; layout(); });
  $("zoom-fit").addEventListener("click", fit);
  $("draw-mode").addEventListener("click", function () {
    state.drawing = !state.drawing;
    this.setAttribute("aria-pressed", String(state.drawing));
    stage.classList.toggle("drawing", state.drawing);
  });
  $("show-anchors").addEventListener("change", function () {
    overlay.classList.toggle("no-anchors", !this.checked);
  });

  function cell(row, text, cls) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) { td.className = cls; }
    row.appendChild(td);
    return td;
  }
  function showTrial(n, result) {
    var box = document.createElement("section");
    box.className = "trial-sample";
    var h = document.createElement("h3");
    h.textContent = state.samples[n].name;
    box.appendChild(h);
    if (result.error) {
      var p = document.createElement("p");
      p.className = "error";
      p.textContent = msg("NotRead") + " " + result.error;
      box.appendChild(p);
    } else {
      var note = document.createElement("p");
      note.className = "hint";
      note.textContent = result.notes.join("; ") + " · " + result.anchors.length + " " +
        msg("Anchors");
      box.appendChild(note);
      var table = document.createElement("table");
      var head = document.createElement("tr");
      ["Field", "Crop", "Guess", "Verdict", "Routing"].forEach(function (k) {
        var th = document.createElement("th");
        th.textContent = msg(k);
        head.appendChild(th);
      });
      table.appendChild(head);
      result.fields.forEach(function (f) {
        var row = document.createElement("tr");
        row.dataset.field = f.name;
        cell(row, f.name);
        var crop = document.createElement("img");
        crop.src = f.crop;
        crop.alt = f.name;
        cell(row, "").appendChild(crop);
        cell(row, f.guess + " (" + f.confidence + ")");
        cell(row, f.problem ? f.problem : msg("Passes"), f.problem ? "fail verdict" : "pass verdict");
        cell(row, (f.auto_accepted ? msg("Auto") : msg("People")) + ": " + f.why, "routing");
        table.appendChild(row);
      });
      box.appendChild(table);
    }
    $("trial").appendChild(box);
  }
  $("dry-run").addEventListener("click", function () {
    if (!state.samples.length) { error(msg("NoSample")); return; }
    error("");
    $("trial").textContent = "";
    var chain = Promise.resolve();
    state.samples.forEach(function (s, n) {
      chain = chain.then(function () {
        status(msg("Reading").replace("{n}", n + 1).replace("{total}", state.samples.length));
        return post("/templates/trial", { template: template(), samples: samples(), sample: s.token })
          .then(function (result) { showTrial(n, result); });
      });
    });
    chain.then(function () { status(""); $("trial").dataset.done = "1"; })
      .catch(function (e) { status(""); error(e.message); });
  });
  $("save").addEventListener("click", function () {
    if (!state.samples.length) { error(msg("NoSample")); return; }
    error("");
    post("/templates", { template: template(), samples: samples() }).then(function (saved) {
      status(msg("Saved").replace("{ref}", saved.ref));
    }).catch(function (e) { error(e.message); });
  });

  start(JSON.parse(root.dataset.start || "null"));
  lists();
})();
