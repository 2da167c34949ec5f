// ChatterPro join page: grey out the room select while "other room" is filled,
// since the server prefers the typed room name.
(function () {
  "use strict";
  var other = document.getElementById("room-other");
  var select = document.getElementById("room");
  if (!other || !select) return;
  function update() {
    select.classList.toggle("overridden", other.value.trim() !== "");
  }
  other.addEventListener("input", update);
  update();
})();
