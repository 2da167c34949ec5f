// ChatterPro chat page, built on the framework's client (chatterpro.js):
// the client connects to /ws/chat/{room}/ (or falls back to Server-Sent
// Events), reconnects with backoff, resumes with since=<last id> and paces
// what it sends. This page shows the connection state, never shows a
// message ID twice, and keeps messages typed while offline in its outbox
// until the server echoes them back, matched by their client ID (cid). All
// text goes into the page through textContent.
import { Client } from "./chatterpro.js";

const MAX_TEXT = 2000; // code points
const RETRY_AFTER_ERROR = 3000; // ms until unacknowledged messages are resent

const body = document.body;
const room = body.dataset.room || "";
const nickname = body.dataset.nickname || "";

const el = {
  status: document.getElementById("status"),
  users: document.getElementById("users"),
  count: document.getElementById("user-count"),
  more: document.getElementById("users-more"),
  messages: document.getElementById("messages"),
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
let cidEchoed = false; // the server echoes cids (older servers do not)
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
  const m = el.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollDown() {
  el.messages.scrollTop = el.messages.scrollHeight;
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

function messageElement(user, text) {
  const li = document.createElement("li");
  li.className = "message" + (user === nickname ? " own" : "");
  li.appendChild(span("user", user));
  li.appendChild(span("text", text));
  return li;
}

function renderMessage(m) {
  if (!m || typeof m.id !== "string") return;
  const user = String(m.user == null ? "" : m.user);
  const text = String(m.text == null ? "" : m.text);
  acknowledge(m, user, text);
  if (seen.has(m.id)) return;
  seen.add(m.id);
  const li = messageElement(user, text);
  li.dataset.id = m.id;
  li.appendChild(timeElement(m.time));
  insert(li);
}

function renderNotice(text, time, cls) {
  const li = document.createElement("li");
  li.className = "notice" + (cls ? " " + cls : "");
  li.appendChild(span("text", String(text == null ? "" : text)));
  if (time !== false) li.appendChild(timeElement(time));
  insert(li);
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
  const li = messageElement(nickname, text);
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
// entry's cid. A server that never echoed a cid predates them: then the
// oldest entry with the same text is the one.
function acknowledge(m, user, text) {
  if (typeof m.cid === "string") {
    cidEchoed = true;
    const i = outbox.findIndex((item) => item.cid === m.cid);
    if (i >= 0) removeItem(i);
    return;
  }
  if (cidEchoed || user !== nickname || seen.has(m.id)) return;
  const i = outbox.findIndex((item) => item.text === text);
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
  (Array.isArray(f.messages) ? f.messages : []).forEach(renderMessage);
  historyDone = true;
  flush();
});
client.on("message", renderMessage);
client.on("users", renderUsers);
client.on("notice", (f) => renderNotice(f.text, f.time));
client.on("error", (f) => {
  if (f.code === "unknown_type") return; // a frame this page sent that an older server does not know (ping)
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

// ---- connection ----

client.on("state", (s) => {
  setStatus(s);
  if (s === "open") {
    gen++;
    historyDone = false;
    return;
  }
  historyDone = false;
  markWaiting();
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
