// Column mode: the guesses are shown as text; tapping one opens it for correcting, so a
// column of right guesses costs one tap on Submit. Without this file every row is a plain
// editable input and the form posts the same way.
(function () {
  "use strict";
  var form = document.getElementById("column");
  if (!form) { return; }
  document.documentElement.classList.add("js");
  var inputs = form.querySelectorAll(".row input[type=text]");
  Array.prototype.forEach.call(inputs, function (input) {
    input.readOnly = true;
    function open() {
      input.readOnly = false;
      input.parentNode.classList.add("fixed");
      input.focus();
      input.select();
    }
    input.addEventListener("click", function () { if (input.readOnly) { open(); } });
    input.addEventListener("keydown", function (e) {
      if (input.readOnly) {
        // On a PC, Tab to a row and type over it (or press Enter to edit it).
        if (e.key === "Enter") { e.preventDefault(); open(); } else if (e.key.length === 1) { open(); }
        return;
      }
      // Enter ends one correction; submitting the whole column is a deliberate tap.
      if (e.key === "Enter") { e.preventDefault(); input.blur(); }
    });
  });
})();
