// ChatterPro join page: grey out the room select while "other room" is filled,
// since the server prefers the typed room name; show the room directory
// (GET /rooms: rooms and how many are online) and refresh it every few
// seconds while the page is visible.
(function () {
  "use strict";
  var other = document.getElementById("room-other");
  var select = document.getElementById("room");
  if (!other || !select) return;
  // chosen is the room the form will join: the typed one, else the select's.
  function chosen() {
    return other.value.trim() !== "" ? other.value.trim() : select.value;
  }
  function update() {
    select.classList.toggle("overridden", other.value.trim() !== "");
    var list = document.getElementById("room-list");
    if (!list) return;
    var buttons = list.querySelectorAll("button");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].setAttribute("aria-pressed", buttons[i].dataset.room === chosen() ? "true" : "false");
    }
  }
  other.addEventListener("input", update);
  select.addEventListener("change", update);
  update();

  var box = document.getElementById("room-directory");
  var list = document.getElementById("room-list");
  if (!box || !list || !window.fetch) return;
  var every = 5000;
  var timer = null;
  var fetching = false;

  // choose puts a room into the form: the select if it offers it, else
  // the "other room" field.
  function choose(name) {
    var offered = false;
    for (var i = 0; i < select.options.length; i++) {
      if (select.options[i].value === name) offered = true;
    }
    if (offered) {
      select.value = name;
      other.value = "";
    } else {
      other.value = name;
    }
    update();
  }

  function render(rooms) {
    var focused = document.activeElement && list.contains(document.activeElement) ? document.activeElement.dataset.room : null;
    list.textContent = "";
    rooms.forEach(function (r) {
      var li = document.createElement("li");
      var b = document.createElement("button");
      b.type = "button";
      b.className = "room-pick";
      b.dataset.room = r.name;
      var name = document.createElement("span");
      name.className = "room-name";
      name.textContent = r.name;
      var count = document.createElement("span");
      count.className = "room-count";
      count.textContent = r.online + " online";
      b.appendChild(name);
      b.appendChild(count);
      b.setAttribute("aria-label", r.name + ", " + r.online + " online");
      b.addEventListener("click", function () { choose(r.name); });
      li.appendChild(b);
      list.appendChild(li);
      if (r.name === focused) b.focus();
    });
    box.hidden = rooms.length === 0;
    update();
  }

  function refresh() {
    clearTimeout(timer);
    timer = null;
    if (fetching) return;
    fetching = true;
    fetch("/rooms", { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (resp) { return resp.ok ? resp.json() : null; })
      .then(function (data) { if (data && Array.isArray(data.rooms)) render(data.rooms); })
      .catch(function () { /* keep the last list; try again later */ })
      .then(function () {
        fetching = false;
        if (!document.hidden) timer = setTimeout(refresh, every);
      });
  }
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden && timer === null && !fetching) refresh();
  });
  refresh();
})();
