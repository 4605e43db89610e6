// Kerani's service worker (served at /sw.js, scope /), registered by review.js on the
// worker's review page: a navigation to /review made offline opens the review page's shell,
// and review.js fills it from the tasks the page kept on the phone.
//
// What it keeps is the shell only: the stylesheet, the scripts and /review/offline (a review
// page without any task, snippet or answer in it). Tasks and snippets are never in this
// cache: review.js keeps the worker's own reserve in the page's storage. There is one cache
// per sign-in (the `s` of this script's URL, worker_pages.signin_tag): a new sign-in
// registers a new worker, whose activation deletes the caches of the one before, and
// sign-out (Clear-Site-Data) deletes this worker, its caches and the page's storage.
"use strict";

var SIGNIN = new URL(self.location.href).searchParams.get("s") || "none";
var CACHE = "kerani-shell-" + SIGNIN;
var SHELL = "/review/offline";
var KEPT = [SHELL, "/static/kerani.css", "/static/snippet.js", "/static/review.js"];
// A line that takes this long to bring the review page is as good as down: the shell then,
// with the tasks the phone kept (the server's page on a working slow line takes seconds).
var SLOW_MS = 15000;

function keep() {
  return caches.open(CACHE).then(function (cache) {
    // Fresh from the server, not from the browser's HTTP cache.
    return Promise.all(KEPT.map(function (url) {
      return fetch(url, { credentials: "same-origin", cache: "no-cache" }).then(function (r) {
        // A shell for someone no longer signed in (a redirect to sign-in) is not kept.
        if (!r.ok || r.redirected) { throw new Error("not kept: " + url); }
        return cache.put(url, r);
      });
    }));
  });
}

self.addEventListener("install", function (event) {
  event.waitUntil(keep().then(function () { return self.skipWaiting(); }));
});

self.addEventListener("activate", function (event) {
  event.waitUntil(caches.keys().then(function (names) {
    return Promise.all(names.filter(function (name) { return name !== CACHE; })
      .map(function (name) { return caches.delete(name); }));
  }).then(function () { return self.clients.claim(); }));
});

// The page asks now and then (review.js, online): the shell again, in the worker's
// language and with the app's newest script.
self.addEventListener("message", function (event) {
  if (event.data === "refresh") { event.waitUntil(keep().catch(function () {})); }
});

self.addEventListener("fetch", function (event) {
  var request = event.request;
  if (request.method !== "GET") { return; }  // answers and forms go straight to the server
  var url = new URL(request.url);
  if (url.origin !== self.location.origin) { return; }
  if (request.mode === "navigate" && url.pathname === "/review") {
    // The server first (it leases the tasks); the shell when it cannot be reached, or
    // does not answer in SLOW_MS (lie-fi: the phone says online, nothing comes through).
    var network = fetch(request);
    var shellOr = function (otherwise) {
      return caches.open(CACHE).then(function (cache) { return cache.match(SHELL); })
        .then(function (shell) { return shell || otherwise(); });
    };
    var slow = new Promise(function (resolve) { setTimeout(resolve, SLOW_MS); })
      .then(function () { return shellOr(function () { return network; }); });
    var down = network.catch(function () {
      return shellOr(function () { return Response.error(); });
    });
    event.respondWith(Promise.race([down, slow]));
    return;
  }
  if (url.search === "" && KEPT.indexOf(url.pathname) > 0) {
    // The stylesheet and the script: as usual online, the kept copy offline.
    event.respondWith(fetch(request).catch(function () {
      return caches.open(CACHE).then(function (cache) { return cache.match(url.pathname); })
        .then(function (kept) { return kept || Response.error(); });
    }));
  }
  // Anything else (other pages, snippets, the API) is the browser's business as usual.
});
