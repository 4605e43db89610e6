// Keyboard flow on a PC: the guess is selected so typing replaces it, Enter submits
// (the browser does that), Escape skips. The page works without this file.
(function () {
  var input = document.getElementById("value");
  if (input) { input.focus(); input.select(); }
  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape") { var s = document.getElementById("skip"); if (s) { s.click(); } }
  });
})();
