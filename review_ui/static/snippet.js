// Tap a snippet to zoom it (twice its width, scrolled sideways), tap again to fit it back.
// The picture stays inside its own box: the rest of the page does not move under a thumb.
(function () {
  "use strict";
  document.addEventListener("click", function (e) {
    var zoom = e.target.closest && e.target.closest("button.zoom");
    if (!zoom) { return; }
    var on = zoom.getAttribute("aria-pressed") !== "true";
    zoom.setAttribute("aria-pressed", on ? "true" : "false");
    zoom.classList.toggle("zoomed", on);
  });
})();
