// Column mode: the guesses are shown as text; tapping one opens it for correcting, so a
// column of right guesses costs one tap per screen. The rows come a screenful at a time
// (Back / Next), and Submit shows on the last screen, once every row has been seen.
// Without this file every row is a plain editable input, all on one page, and the form
// posts the same way.
(function () {
  "use strict";
  var form = document.getElementById("column");
  if (!form) { return; }
  document.documentElement.classList.add("js");
  var inputs = form.querySelectorAll(".row input[type=text]");
  Array.prototype.forEach.call(inputs, function (input) {
    input.readOnly = true;
    var row = input.closest(".row");
    function open() {
      input.readOnly = false;
      row.classList.add("fixed");
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

  // Pages of rows: as many as fit on this screen below the top of the form, with room for
  // the Back / Next line; measured once the snippets are in (their heights differ).
  var rows = Array.prototype.slice.call(form.querySelectorAll(".row"));
  var pager = document.getElementById("pager");
  var actions = document.getElementById("column-actions");
  var submit = document.getElementById("submit-column");
  var pages = [];
  var page = 0;
  var back = button("rows-back", form.dataset.back, "");
  var where = document.createElement("span");
  where.id = "rows-shown";
  where.setAttribute("aria-live", "polite");
  var next = button("rows-next", form.dataset.next, "primary");

  function button(id, text, className) {
    var b = document.createElement("button");
    b.type = "button";
    b.id = id;
    b.className = className;
    b.textContent = text;
    return b;
  }

  function paginate() {
    // The first screen starts below the title and hints; the next ones at the form's top.
    var below = 4.5 * parseFloat(getComputedStyle(document.documentElement).fontSize);
    var first = window.innerHeight - form.getBoundingClientRect().top - below;
    var room = first;
    var used = 0;
    pages = [[]];
    rows.forEach(function (row) {
      var height = row.getBoundingClientRect().height;
      var current = pages[pages.length - 1];
      if (current.length && used + height > room) {
        pages.push([]);
        used = 0;
        room = window.innerHeight - below;
        current = pages[pages.length - 1];
      }
      current.push(row);
      used += height;
    });
  }

  function show(n) {
    page = n;
    rows.forEach(function (row) { row.hidden = pages[n].indexOf(row) < 0; });
    var first = rows.indexOf(pages[n][0]) + 1;
    where.textContent = form.dataset.page.replace("{first}", first)
      .replace("{last}", first + pages[n].length - 1).replace("{n}", rows.length);
    back.disabled = n === 0;
    next.hidden = n === pages.length - 1;
    submit.hidden = n !== pages.length - 1;
  }

  function start() {
    window.scrollTo(0, 0);
    paginate();
    if (pages.length < 2) { return; }
    pager.appendChild(back);
    pager.appendChild(where);
    pager.appendChild(next);
    // Submit takes Next's place on the last screen, so that it too fits without scrolling.
    pager.appendChild(submit);
    actions.hidden = true;
    pager.hidden = false;
    back.addEventListener("click", function () { show(Math.max(0, page - 1)); form.scrollIntoView(); });
    next.addEventListener("click", function () { show(Math.min(pages.length - 1, page + 1)); form.scrollIntoView(); });
    show(0);
  }
  if (document.readyState === "complete") { start(); } else { window.addEventListener("load", start); }
})();
