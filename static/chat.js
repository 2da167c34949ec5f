// ChatterPro chat page, built on the framework's client (chatterpro.js):
// the client connects to /ws/chat/{room}/ (or falls back to Server-Sent
// Events), reconnects with backoff, resumes with since=<last id> and paces
// what it sends. This page shows the connection state, never shows a
// message ID twice, and keeps messages typed while offline in its outbox
// until the server echoes them back, matched by their client ID (cid). It
// shows who is typing, pages back through older messages, makes http and
// https links clickable, highlights mentions of the user's nickname and
// counts unread messages in the title while the tab is hidden. Text goes
// into the page only as text nodes: nothing a user sends is interpreted.
import { Client } from "./chatterpro.js";

const MAX_TEXT = 2000; // code points
const RETRY_AFTER_ERROR = 3000; // ms until unacknowledged messages are resent
const TYPING_EVERY = 2100; // ms between our typing signals (the server forwards one per 2 s)
const TYPING_SHOWN = 5000; // ms a typing signal is shown without a new one
const OLDER_TIMEOUT = 10000; // ms to wait for an older page before allowing a new request
const OLDER_NEAR_TOP = 40; // px from the top of the list that asks for older messages

const body = document.body;
const room = body.dataset.room || "";
const nickname = body.dataset.nickname || "";

const el = {
  status: document.getElementById("status"),
  users: document.getElementById("users"),
  count: document.getElementById("user-count"),
  more: document.getElementById("users-more"),
  messages: document.getElementById("messages"),
  scroller: document.getElementById("scroller"),
  older: document.getElementById("older"),
  olderButton: document.getElementById("older-button"),
  olderStatus: document.getElementById("older-status"),
  typing: document.getElementById("typing"),
  notify: document.getElementById("notify"),
  form: document.getElementById("message-form"),
  input: document.getElementById("message-input"),
  leaveForm: document.getElementById("leave-form"),
  toast: document.getElementById("toast"),
};

const STATUS = {
  connecting: ["connecting", "connecting…"],
  open: ["open", "online"],
  reconnecting: ["reconnecting", "reconnecting…"],
  offline: ["closed", "offline"],
};

let everOpened = false; // a connection has been open before: we are reconnecting
let gen = 0; // counts the connections that opened
let historyDone = false; // the current connection's history frame arrived
let failedHandshakes = 0;
const seen = new Set();
// outbox: {cid, text, li, gen, queued} in the order typed. queued: handed to
// the client, not yet written; gen: the connection it was written on, -1
// when it must be sent (again).
let outbox = [];
let resendTimer = null;
let toastTimer = null;

const client = new Client("/ws/chat/" + encodeURIComponent(room) + "/");

function setStatus(state) {
  const [key, text] = STATUS[state];
  el.status.dataset.state = key;
  el.status.textContent = text;
}

// newCid is a client ID for one message: 32 random hex digits.
function newCid() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// ---- rendering ----

function nearBottom() {
  const m = el.scroller;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollDown() {
  el.scroller.scrollTop = el.scroller.scrollHeight;
}

// insert puts li above pending outbox messages, which stay at the bottom.
function insert(li) {
  const stick = nearBottom();
  el.messages.insertBefore(li, el.messages.querySelector("li.pending"));
  if (stick) scrollDown();
}

function timeElement(iso) {
  const t = document.createElement("time");
  t.className = "time";
  let d = iso ? new Date(iso) : new Date();
  if (isNaN(d.getTime())) d = new Date();
  t.dateTime = d.toISOString();
  t.textContent = d.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
  t.title = d.toLocaleString();
  return t;
}

function span(cls, text) {
  const s = document.createElement("span");
  s.className = cls;
  s.textContent = text;
  return s;
}

// ---- message text: links and mentions ----

// A link starts with http:// or https:// after a space, a bracket or the
// start of the text, and runs to the next space; trailing punctuation is
// left out, as is a closing bracket it did not open.
const LINK = /(^|[\s(<\[{"'])(https?:\/\/[^\s<>"]+)/gi;
const TRAILING = /[.,;:!?'"]+$/;

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

// mentionRe finds "@" followed by the user's whole nickname, in any case,
// not inside a word on either side.
const mentionRe = nickname
  ? new RegExp("(?<![\\p{L}\\p{N}_])@" + escapeRegExp(nickname) + "(?![\\p{L}\\p{N}_])", "giu")
  : null;

/** mentions says whether text mentions the user's nickname. */
function mentions(text) {
  if (!mentionRe) return false;
  mentionRe.lastIndex = 0;
  return mentionRe.test(text);
}

// trimLink returns the part of a matched URL that belongs to the link.
function trimLink(url) {
  let u = url.replace(TRAILING, "");
  // A closing bracket belongs to the link only if the link opened one.
  for (const [open, close] of [["(", ")"], ["[", "]"]]) {
    while (u.endsWith(close) && u.split(open).length < u.split(close).length) {
      u = u.slice(0, -1).replace(TRAILING, "");
    }
  }
  return u;
}

// safeHref returns url if it is an http or https URL, else null.
function safeHref(url) {
  try {
    const u = new URL(url);
    return u.protocol === "http:" || u.protocol === "https:" ? u.href : null;
  } catch (err) {
    return null;
  }
}

// appendMentions adds text to parent, the user's mentions in <mark>.
function appendMentions(parent, text) {
  if (!mentionRe || text.indexOf("@") < 0) {
    parent.appendChild(document.createTextNode(text));
    return;
  }
  let at = 0;
  mentionRe.lastIndex = 0;
  for (const m of text.matchAll(mentionRe)) {
    if (m.index > at) parent.appendChild(document.createTextNode(text.slice(at, m.index)));
    const mark = document.createElement("mark");
    mark.className = "mention-name";
    mark.textContent = m[0];
    parent.appendChild(mark);
    at = m.index + m[0].length;
  }
  if (at < text.length) parent.appendChild(document.createTextNode(text.slice(at)));
}

// textElement is a message's text as DOM nodes: text, links (http and
// https only, opened in a new tab without the opener) and mentions.
function textElement(text, highlight) {
  const s = document.createElement("span");
  s.className = "text";
  const add = (part) => (highlight ? appendMentions(s, part) : s.appendChild(document.createTextNode(part)));
  let at = 0;
  LINK.lastIndex = 0;
  for (const m of text.matchAll(LINK)) {
    const start = m.index + m[1].length;
    const url = trimLink(m[2]);
    const href = safeHref(url);
    if (!href) continue;
    if (start > at) add(text.slice(at, start));
    const a = document.createElement("a");
    a.href = href;
    a.textContent = url;
    a.rel = "noopener noreferrer";
    a.target = "_blank";
    s.appendChild(a);
    at = start + url.length;
  }
  if (at < text.length) add(text.slice(at));
  return s;
}

function messageElement(user, text, bot) {
  const own = user === nickname;
  const li = document.createElement("li");
  li.className = "message" + (own ? " own" : "");
  if (bot) li.classList.add("bot"); // the style adds a "bot" badge after the name
  li.appendChild(span("user", user));
  const mentioned = !own && mentions(text);
  if (mentioned) li.classList.add("mention");
  li.appendChild(textElement(text, mentioned));
  return li;
}

// messageFrameElement builds the element of a message frame, or returns
// null for a frame without an ID.
function messageFrameElement(m) {
  if (!m || typeof m.id !== "string") return null;
  const user = String(m.user == null ? "" : m.user);
  const text = String(m.text == null ? "" : m.text);
  const li = messageElement(user, text, m.bot === true);
  li.dataset.id = m.id;
  li.appendChild(timeElement(m.time));
  return li;
}

// renderMessage shows a message frame once per ID; live says it arrived
// now (not in a history frame), so it counts as unread and may notify.
function renderMessage(m, live) {
  if (!m || typeof m.id !== "string") return;
  acknowledge(m);
  if (seen.has(m.id)) return;
  seen.add(m.id);
  const li = messageFrameElement(m);
  stopTyping(String(m.user == null ? "" : m.user));
  insert(li);
  if (live && !li.classList.contains("own")) arrived(li, m);
}

function renderNotice(text, time, cls) {
  insert(noticeElement(text, time, cls));
}

function noticeElement(text, time, cls) {
  const li = document.createElement("li");
  li.className = "notice" + (cls ? " " + cls : "");
  li.appendChild(span("text", String(text == null ? "" : text)));
  if (time !== false) li.appendChild(timeElement(time));
  return li;
}

function renderUsers(f) {
  const list = Array.isArray(f.users) ? f.users : [];
  const frag = document.createDocumentFragment();
  for (const u of list) {
    const li = document.createElement("li");
    const name = String(u && u.name != null ? u.name : "");
    li.textContent = name;
    if (name === nickname) li.className = "me";
    frag.appendChild(li);
  }
  el.users.replaceChildren(frag);
  const count = typeof f.count === "number" ? f.count : list.length;
  el.count.textContent = String(count);
  if (count > list.length) {
    el.more.textContent = "and " + (count - list.length) + " more";
    el.more.hidden = false;
  } else {
    el.more.hidden = true;
  }
}

function showToast(text) {
  el.toast.textContent = text;
  el.toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    el.toast.hidden = true;
  }, 4000);
}

// ---- outbox ----

function setItemTime(item, text) {
  item.li.querySelector(".time").textContent = text;
}

function queue(text) {
  const li = messageElement(nickname, text, false);
  li.classList.add("own", "pending");
  const t = document.createElement("time");
  t.className = "time";
  li.appendChild(t);
  const item = { cid: newCid(), text, li, gen: -1, queued: false };
  setItemTime(item, client.state === "open" ? "sending…" : "pending");
  outbox.push(item);
  el.messages.appendChild(li);
  scrollDown();
  flush();
}

function removeItem(i) {
  outbox[i].li.remove();
  outbox.splice(i, 1);
}

// acknowledge removes the outbox entry a message frame answers: the server
// echoed it back, so it is recorded and has its ID. The echo carries the
// entry's cid; a frame without one answers nothing.
function acknowledge(m) {
  if (typeof m.cid !== "string") return;
  const i = outbox.findIndex((item) => item.cid === m.cid);
  if (i >= 0) removeItem(i);
}

// flush hands the client every entry not written on this connection yet,
// once the connection's history has arrived (so resent entries are
// checked against it first). The client paces them.
function flush() {
  if (client.state !== "open" || !historyDone) return;
  for (const item of outbox) {
    if (item.queued || item.gen === gen) continue;
    item.queued = true;
    setItemTime(item, "sending…");
    client.send({ type: "message", text: item.text, cid: item.cid }).then((ok) => {
      item.queued = false;
      if (ok) item.gen = gen; // written on the connection open now
    });
  }
}

function markWaiting() {
  for (const item of outbox) {
    item.gen = -1;
    setItemTime(item, "pending");
  }
}

// After an error frame the server may have dropped a message we sent; we
// cannot tell which one, so resend whatever is still unacknowledged once
// acknowledgements had time to arrive. The cid makes a resend harmless.
function scheduleResend() {
  if (resendTimer !== null) return;
  resendTimer = setTimeout(() => {
    resendTimer = null;
    for (const item of outbox) if (!item.queued) item.gen = -1;
    flush();
  }, RETRY_AFTER_ERROR);
}

function failOldestSent() {
  const i = outbox.findIndex((item) => item.gen === gen && !item.queued);
  if (i < 0) return;
  const li = outbox[i].li;
  li.classList.remove("pending");
  li.classList.add("failed");
  li.querySelector(".time").textContent = "not sent";
  outbox.splice(i, 1);
}

// ---- frames ----

client.on("history", (f) => {
  if (f.reset && everOpened && seen.size > 0) {
    renderNotice("Reconnected. Some messages may be missing.", false, "warn");
  }
  busy(() => (Array.isArray(f.messages) ? f.messages : []).forEach((m) => renderMessage(m, everOpened)));
  historyDone = true;
  flush();
  updateOlder();
  fillView();
});
client.on("message", (m) => renderMessage(m, true));
client.on("older", renderOlder);
client.on("typing", (f) => startTyping(f.user));
client.on("users", renderUsers);
client.on("notice", (f) => renderNotice(f.text, f.time));
client.on("error", (f) => {
  if (f.code === "unknown_type") return; // a frame this page sent that an older server does not know (ping)
  if (f.code === "bad_id" && older.asked) {
    // The oldest message shown is no longer kept: nothing older is.
    olderDone();
    return;
  }
  if (older.asked && (f.code === "rate_limited" || f.code === "unavailable")) older.asked = null;
  showToast(errorText(f));
  if (f.code === "bad_text") {
    failOldestSent();
  } else if (f.code === "rate_limited" || f.code === "unavailable") {
    scheduleResend();
  }
});

function errorText(f) {
  switch (f.code) {
    case "rate_limited":
      return "You are sending messages too fast. Please slow down.";
    case "unavailable":
      return "The chat is temporarily unavailable. Your message will be retried.";
    default:
      return String(f.text || f.code || "Something went wrong.");
  }
}

// busy runs f, a batch of changes to the message list (a history frame,
// a page of older messages), with the live region marked aria-busy until
// the next frames are drawn: the batch is one change, not one
// announcement per message.
let busyUntil = 0;
function busy(f) {
  el.messages.setAttribute("aria-busy", "true");
  const mine = ++busyUntil;
  try {
    f();
  } finally {
    requestAnimationFrame(() =>
      requestAnimationFrame(() => {
        if (mine === busyUntil) el.messages.setAttribute("aria-busy", "false");
      }),
    );
  }
}

// ---- older messages ----

// older: asked is the ID an "older" request was sent for (null when none
// is under way), at when it was sent; done once the server said the room
// keeps nothing older.
const older = { asked: null, at: 0, done: false };

function oldestId() {
  const li = el.messages.querySelector("li.message[data-id]");
  return li ? li.dataset.id : null;
}

// updateOlder shows the button while older messages may exist, and what
// is going on.
function updateOlder() {
  const has = oldestId() !== null;
  el.older.hidden = !has;
  // The button keeps the focus while it waits (aria-disabled, not
  // disabled); once there is nothing older, the focus goes to the words
  // saying so.
  const focused = document.activeElement === el.olderButton;
  el.olderButton.hidden = older.done;
  el.olderButton.setAttribute("aria-disabled", older.asked !== null || client.state !== "open" ? "true" : "false");
  el.olderButton.textContent = older.asked !== null ? "Loading older messages…" : "Load older messages";
  el.olderStatus.hidden = !older.done;
  el.olderStatus.textContent = older.done ? "This is the beginning of the conversation." : "";
  if (focused && older.done) el.olderStatus.focus({ preventScroll: true });
}

// loadOlder asks for the page before the oldest message shown.
function loadOlder() {
  if (older.done || client.state !== "open" || !historyDone) return;
  if (older.asked !== null && Date.now() - older.at < OLDER_TIMEOUT) return;
  const id = oldestId();
  if (id === null) return;
  older.asked = id;
  older.at = Date.now();
  updateOlder();
  client.send({ type: "older", before: id });
}

// renderOlder inserts a page of older messages above those shown, keeping
// what the reader sees where it is.
function renderOlder(f) {
  const asked = older.asked;
  older.asked = null;
  const frag = document.createDocumentFragment();
  let added = 0;
  for (const m of Array.isArray(f.messages) ? f.messages : []) {
    if (!m || typeof m.id !== "string" || seen.has(m.id)) continue;
    seen.add(m.id);
    frag.appendChild(messageFrameElement(m));
    added++;
  }
  // An answer for the oldest message shown says whether there is more.
  if (f.more === false && asked !== null && asked === oldestId()) older.done = true;
  const sc = el.scroller;
  const fromBottom = sc.scrollHeight - sc.scrollTop;
  busy(() => el.messages.insertBefore(frag, el.messages.firstChild));
  updateOlder();
  sc.scrollTop = sc.scrollHeight - fromBottom;
  if (added > 0) fillView();
}

function olderDone() {
  older.asked = null;
  older.done = true;
  const sc = el.scroller;
  const fromBottom = sc.scrollHeight - sc.scrollTop;
  updateOlder();
  sc.scrollTop = sc.scrollHeight - fromBottom;
}

// fillView asks for older messages while the list is too short to scroll
// (so that scrolling up is not the only way) or is scrolled to the top.
function fillView() {
  const sc = el.scroller;
  if (sc.scrollHeight <= sc.clientHeight || sc.scrollTop < OLDER_NEAR_TOP) loadOlder();
}

el.scroller.addEventListener("scroll", () => {
  if (el.scroller.scrollTop < OLDER_NEAR_TOP) loadOlder();
}, { passive: true });
el.olderButton.addEventListener("click", loadOlder);

// ---- typing ----

// typers: nickname -> timer that forgets the signal, in the order they
// started typing.
const typers = new Map();
let typingSentAt = 0;

function startTyping(user) {
  user = String(user == null ? "" : user);
  if (user === "" || user === nickname) return; // our own other tab
  clearTimeout(typers.get(user));
  typers.set(user, setTimeout(() => stopTyping(user), TYPING_SHOWN));
  renderTyping();
}

function stopTyping(user) {
  if (!typers.has(user)) return;
  clearTimeout(typers.get(user));
  typers.delete(user);
  renderTyping();
}

function clearTypers() {
  for (const t of typers.values()) clearTimeout(t);
  typers.clear();
  renderTyping();
}

function renderTyping() {
  const names = [...typers.keys()];
  let text = "";
  if (names.length === 1) text = names[0] + " is typing…";
  else if (names.length === 2) text = names[0] + " and " + names[1] + " are typing…";
  else if (names.length > 2) text = "Several people are typing…";
  el.typing.textContent = text;
  el.typing.classList.toggle("active", text !== "");
}

// sendTyping tells the room we are typing, at most once per TYPING_EVERY,
// only with something in the field and only while online (a typing
// signal is not worth keeping for later).
function sendTyping() {
  if (el.input.value.trim() === "" || client.state !== "open") return;
  const now = Date.now();
  if (now - typingSentAt < TYPING_EVERY) return;
  typingSentAt = now;
  client.send({ type: "typing" });
}

// ---- unread and mentions ----

const baseTitle = document.title;
let unread = 0;

function hidden() {
  return document.visibilityState === "hidden" || document.hidden === true;
}

function updateTitle() {
  document.title = unread > 0 ? "(" + unread + ") " + baseTitle : baseTitle;
}

// arrived counts a live message of someone else while the tab is hidden,
// and notifies of a mention.
function arrived(li, m) {
  if (hidden()) {
    unread++;
    updateTitle();
  }
  if (li.classList.contains("mention")) notifyMention(m);
}

document.addEventListener("visibilitychange", () => {
  if (hidden()) return;
  unread = 0;
  updateTitle();
});

const NOTIFY_KEY = "chatterpro.notify";

function notifySupported() {
  return typeof window.Notification === "function";
}

// notifyOn says whether the user asked for notifications and allowed them.
function notifyOn() {
  if (!notifySupported() || window.Notification.permission !== "granted") return false;
  try {
    return localStorage.getItem(NOTIFY_KEY) !== "off";
  } catch (err) {
    return true;
  }
}

function setNotifyPref(on) {
  try {
    localStorage.setItem(NOTIFY_KEY, on ? "on" : "off");
  } catch (err) {
    // private mode: the choice lasts as long as the page
  }
}

function updateBell() {
  const on = notifyOn();
  el.notify.setAttribute("aria-pressed", on ? "true" : "false");
  el.notify.classList.toggle("on", on);
  el.notify.title = on ? "Desktop notifications for mentions are on" : "Desktop notifications when someone mentions you";
}

el.notify.addEventListener("click", () => {
  if (!notifySupported()) {
    showToast("This browser cannot show desktop notifications.");
    return;
  }
  const N = window.Notification;
  if (N.permission === "granted") {
    // Toggle what the bell shows (permission may have come from elsewhere).
    setNotifyPref(el.notify.getAttribute("aria-pressed") !== "true");
    updateBell();
    showToast(notifyOn() ? "You will be notified when someone mentions you." : "Notifications are off.");
    return;
  }
  if (N.permission === "denied") {
    showToast("Notifications are blocked for this site in the browser's settings.");
    return;
  }
  // A click is a user gesture: the one moment a page may ask.
  Promise.resolve(N.requestPermission()).then((p) => {
    if (p === "granted") setNotifyPref(true);
    updateBell();
    showToast(p === "granted" ? "You will be notified when someone mentions you." : "Notifications were not allowed.");
  });
});

function notifyMention(m) {
  if (!notifyOn() || (!hidden() && document.hasFocus())) return;
  try {
    const n = new window.Notification(String(m.user) + " mentioned you in " + room, {
      body: String(m.text).slice(0, 200),
      tag: "chatterpro-" + m.id,
    });
    n.onclick = () => {
      window.focus();
      n.close();
    };
  } catch (err) {
    // Some browsers allow notifications only from a service worker.
  }
}

updateBell();

// ---- connection ----

client.on("state", (s) => {
  setStatus(s);
  older.asked = null; // an answer on a lost connection never comes
  if (s === "open") {
    gen++;
    historyDone = false;
    updateOlder();
    return;
  }
  historyDone = false;
  markWaiting();
  clearTypers(); // typing signals missed while away would never end
  updateOlder();
});

client.on("close", (info) => {
  if (info.opened) {
    everOpened = true;
    failedHandshakes = 0;
  } else if (info.reconnect) {
    failedHandshakes++;
    // A handshake that keeps failing may mean the session is gone (403):
    // ask the page itself, which redirects to / without a session.
    if (failedHandshakes % 3 === 0) checkSession();
  }
  if (info.code === 1008) {
    renderNotice("Disconnected by the server (too many errors). Reload the page to rejoin.", false, "warn");
  }
});

function checkSession() {
  fetch(location.pathname, { method: "GET", redirect: "manual", credentials: "same-origin", cache: "no-store" })
    .then((resp) => {
      if (resp.type === "opaqueredirect" || resp.status === 303) {
        client.close();
        location.assign("/");
      }
    })
    .catch(() => {});
}

// ---- user actions ----

el.form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = el.input.value.trim();
  if (text === "") return;
  if (Array.from(text).length > MAX_TEXT) {
    showToast("A message can be at most " + MAX_TEXT + " characters long.");
    return;
  }
  el.input.value = "";
  queue(text);
  el.input.focus();
});

el.input.addEventListener("input", sendTyping);

el.leaveForm.addEventListener("submit", (ev) => {
  ev.preventDefault();
  const form = el.leaveForm;
  if (form.dataset.leaving) return;
  form.dataset.leaving = "1";
  let done = false;
  const post = () => {
    if (done) return;
    done = true;
    form.submit();
  };
  // Let the 1000 close reach the server before the page goes away, so the
  // leave is announced at once; don't wait long for it.
  setTimeout(post, 500);
  client.close(1000, "leave").then(post);
  setStatus("offline");
});
