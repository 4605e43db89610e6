// The agency's upload page: drop files, folders and zips, name the batch and pick its
// template, then send. The page calls the agency API with the session and its CSRF token:
// a batch is created, each file goes up (small ones whole, big ones in chunks that resume
// from where the server says after a lost line), the batch is started, and the browser
// goes to the batch's page. Progress is shown per file. Nothing comes from another host.
(function () {
  "use strict";
  var root = document.getElementById("upload");
  if (!root) { return; }
  var csrf = root.dataset.csrf;
  var CHUNK = parseInt(root.dataset.chunk, 10) || 8 * 1024 * 1024;
  var WHOLE_UP_TO = CHUNK;  // bigger files go in chunks
  var msg = function (key) { return root.dataset["msg" + key] || key; };
  var $ = function (id) { return document.getElementById(id); };
  var queue = [];  // {file, name, row, bar, note, sent}
  var batch = null;  // made on the first Send

  function show(id, text) { var el = $(id); el.textContent = text || ""; el.hidden = !text; }
  function size(n) {
    if (n >= 1048576) { return (n / 1048576).toFixed(1) + " MB"; }
    return Math.max(1, Math.round(n / 1024)) + " KB";
  }
  function summary() {
    var total = queue.reduce(function (s, q) { return s + q.file.size; }, 0);
    show("summary", queue.length ? queue.length + " · " + size(total) : "");
  }

  function add(file, name) {
    name = (name || file.name).replace(/^\/+/, "");
    // Hidden files of a folder (.DS_Store, .git/...) are no scans: left out, as the
    // command line's folder walk leaves them.
    if (name.split("/").some(function (part) { return part.charAt(0) === "."; })) { return; }
    if (queue.some(function (q) { return q.name === name; })) { return; }
    var row = document.createElement("tr");
    var cells = [name, size(file.size)].map(function (text) {
      var td = document.createElement("td"); td.textContent = text; return td;
    });
    var barCell = document.createElement("td");
    var bar = document.createElement("progress");
    bar.max = file.size || 1; bar.value = 0;
    bar.setAttribute("aria-label", name);
    var note = document.createElement("span");
    note.className = "hint";
    barCell.appendChild(bar); barCell.appendChild(note);
    cells.forEach(function (td) { row.appendChild(td); });
    row.appendChild(barCell);
    $("files").querySelector("tbody").appendChild(row);
    $("files").hidden = false;
    queue.push({ file: file, name: name, row: row, bar: bar, note: note });
    summary();
  }

  // A dropped folder: walk it (readEntries gives its entries a few at a time).
  function walk(entry, path, done) {
    if (entry.isFile) {
      entry.file(function (f) { add(f, path + f.name); done(); }, done);
      return;
    }
    if (!entry.isDirectory) { done(); return; }
    var reader = entry.createReader(), pending = 1, all = [];
    var finish = function () { if (--pending === 0) { done(); } };
    (function more() {
      reader.readEntries(function (entries) {
        if (!entries.length) {
          all.forEach(function (e) { pending++; walk(e, path + entry.name + "/", finish); });
          finish();
          return;
        }
        all = all.concat(Array.prototype.slice.call(entries));
        more();
      }, finish);
    })();
  }

  var drop = $("drop");
  ["dragenter", "dragover"].forEach(function (type) {
    drop.addEventListener(type, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  drop.addEventListener("dragleave", function () { drop.classList.remove("over"); });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    drop.classList.remove("over");
    var items = e.dataTransfer.items;
    if (items && items.length && items[0].webkitGetAsEntry) {
      Array.prototype.forEach.call(items, function (item) {
        var entry = item.webkitGetAsEntry();
        if (entry) { walk(entry, "", function () {}); }
      });
    } else {
      Array.prototype.forEach.call(e.dataTransfer.files, function (f) { add(f); });
    }
  });
  $("pick-files").addEventListener("change", function (e) {
    Array.prototype.forEach.call(e.target.files, function (f) { add(f); });
    e.target.value = "";
  });
  $("pick-folder").addEventListener("change", function (e) {
    Array.prototype.forEach.call(e.target.files, function (f) { add(f, f.webkitRelativePath); });
    e.target.value = "";
  });

  function request(method, url, body, headers, onProgress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, url);
      xhr.setRequestHeader("X-CSRF-Token", csrf);
      Object.keys(headers || {}).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      if (onProgress && xhr.upload) {
        xhr.upload.onprogress = function (e) { if (e.lengthComputable) { onProgress(e.loaded); } };
      }
      xhr.onload = function () {
        var data = null;
        try { data = JSON.parse(xhr.responseText); } catch (err) { data = null; }
        if (xhr.status >= 200 && xhr.status < 300) { resolve(data); return; }
        var error = new Error((data && data.error) || (data && data.detail) || xhr.statusText);
        error.status = xhr.status;
        reject(error);
      };
      xhr.onerror = function () { var e = new Error("network"); e.status = 0; reject(e); };
      xhr.send(body);
    });
  }
  function json(method, url, body) {
    return request(method, url, JSON.stringify(body), { "Content-Type": "application/json" });
  }
  function wait(ms) { return new Promise(function (r) { setTimeout(r, ms); }); }

  function sendWhole(batch, q) {
    var form = new FormData();
    form.append("files", q.file, q.name);
    return request("POST", "/api/v1/uploads/" + batch + "/files", form, {}, function (n) {
      q.bar.value = Math.min(n, q.file.size);
    });
  }

  // In chunks, each at the offset the server has; a lost line waits and asks again.
  function sendChunked(batch, q) {
    return json("POST", "/api/v1/uploads/" + batch + "/chunked",
      { filename: q.name, size: q.file.size }).then(function (up) {
      var tries = 0;
      function next(offset, state) {
        q.bar.value = offset;
        if ((state || up).status === "complete") { return Promise.resolve(up); }
        if (offset >= q.file.size) {
          // All bytes in, the file not stored yet (the last answer was lost): ask again.
          return wait(1000).then(function () {
            return json("GET", up.url).then(function (s) { return next(s.received, s); });
          });
        }
        var piece = q.file.slice(offset, offset + CHUNK);
        return request("PATCH", up.url, piece, { "Upload-Offset": String(offset) },
          function (n) { q.bar.value = offset + n; })
          .then(function (state) { tries = 0; q.note.textContent = ""; return next(state.received, state); })
          .catch(function (err) {
            if (err.status >= 400 && err.status < 500 && err.status !== 409) { throw err; }
            if (++tries > 30) { throw err; }
            q.note.textContent = " " + msg("Retrying");
            return wait(Math.min(30000, 1000 * tries)).then(function () {
              return json("GET", up.url).then(function (s) { return next(s.received, s); },
                function () { return next(offset); });
            });
          });
      }
      return next(up.received || 0);
    });
  }

  $("batch-form").addEventListener("submit", function (e) {
    e.preventDefault();
    show("message", "");
    if (!queue.length) { show("message", msg("None")); return; }
    $("send").disabled = true;
    // Sent again after a failure: the same batch, and only the files not sent yet.
    var made = batch ? Promise.resolve({ batch_id: batch }) : json("POST", "/api/v1/batches",
      { name: $("batch-name").value, template: $("batch-template").value });
    made
      .then(function (made) {
        batch = made.batch_id;
        return queue.reduce(function (chain, q) {
          return chain.then(function () {
            if (q.sent) { return null; }
            var send = q.file.size > WHOLE_UP_TO ? sendChunked : sendWhole;
            return send(batch, q).then(function () {
              q.sent = true;
              q.bar.value = q.bar.max; q.note.textContent = " " + msg("Sent");
            }, function (err) {
              q.note.textContent = " " + msg("Failed") + ": " + err.message;
              throw err;
            });
          });
        }, Promise.resolve());
      })
      .then(function () {
        show("status", msg("Starting"));
        return json("POST", "/api/v1/batches/" + batch + "/start");
      })
      .then(function () { window.location.assign("/batches/" + batch + "/report"); })
      .catch(function (err) {
        show("message", err.message);
        $("send").disabled = false;
      });
  });
})();
