// ChatterPro chat client. Speaks the JSON frames of the /ws/chat/{room}/
// websocket, reconnects by itself with capped exponential backoff and
// jitter, resumes with ?since=<last id>, never shows a message ID twice, and
// keeps messages typed while offline in an outbox until the server echoes
// them back. All text goes into the page through textContent.
(function () {
  "use strict";

  var BACKOFF_MIN = 500; // ms
  var BACKOFF_MAX = 10000; // ms
  var SEND_GAP = 120; // ms between outbox sends, below the server's rate limit
  var MAX_TEXT = 2000; // code points
  var RETRY_AFTER_ERROR = 3000; // ms until unacknowledged messages are resent

  var body = document.body;
  var room = body.dataset.room || "";
  var nickname = body.dataset.nickname || "";

  var el = {
    status: document.getElementById("status"),
    users: document.getElementById("users"),
    count: document.getElementById("user-count"),
    more: document.getElementById("users-more"),
    messages: document.getElementById("messages"),
    form: document.getElementById("message-form"),
    input: document.getElementById("message-input"),
    send: document.getElementById("send"),
    leaveForm: document.getElementById("leave-form"),
    toast: document.getElementById("toast"),
  };

  var ws = null;
  var everOpened = false; // a connection has been open before: we are reconnecting
  var openedThis = false; // the current socket reached open
  var attempt = 0; // failed attempts since the last open
  var failedHandshakes = 0;
  var retryTimer = null;
  var stopped = false; // no more reconnects (Leave, policy close)
  var lastId = null;
  var seen = new Set();
  // outbox: {text, li, sent} in the order typed. sent means written to the
  // current socket and not yet acknowledged by its own message frame.
  var outbox = [];
  var flushTimer = null;
  var resendTimer = null;
  var toastTimer = null;

  var STATUS_TEXT = {
    connecting: "connecting…",
    open: "online",
    reconnecting: "reconnecting…",
    closed: "offline",
  };

  function setStatus(state, text) {
    el.status.dataset.state = state;
    el.status.textContent = text || STATUS_TEXT[state];
  }

  // ---- rendering ----

  function nearBottom() {
    var m = el.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
  }

  function scrollDown() {
    el.messages.scrollTop = el.messages.scrollHeight;
  }

  // insert puts li above pending outbox messages, which stay at the bottom.
  function insert(li) {
    var stick = nearBottom();
    var firstPending = el.messages.querySelector("li.pending");
    el.messages.insertBefore(li, firstPending);
    if (stick) scrollDown();
  }

  function timeElement(iso) {
    var t = document.createElement("time");
    t.className = "time";
    var d = iso ? new Date(iso) : new Date();
    if (isNaN(d.getTime())) d = new Date();
    t.dateTime = d.toISOString();
    t.textContent = d.toLocaleTimeString([], { hour: "numeric", minute: "2-digit" });
    t.title = d.toLocaleString();
    return t;
  }

  function span(cls, text) {
    var s = document.createElement("span");
    s.className = cls;
    s.textContent = text;
    return s;
  }

  function messageElement(user, text) {
    var li = document.createElement("li");
    li.className = "message" + (user === nickname ? " own" : "");
    li.appendChild(span("user", user));
    li.appendChild(span("text", text));
    return li;
  }

  function renderMessage(m) {
    if (!m || typeof m.id !== "string") return;
    lastId = m.id;
    if (seen.has(m.id)) return;
    seen.add(m.id);
    var user = String(m.user == null ? "" : m.user);
    var text = String(m.text == null ? "" : m.text);
    if (user === nickname) acknowledge(text);
    var li = messageElement(user, text);
    li.dataset.id = m.id;
    li.appendChild(timeElement(m.time));
    insert(li);
  }

  function renderNotice(text, time, cls) {
    var li = document.createElement("li");
    li.className = "notice" + (cls ? " " + cls : "");
    li.appendChild(span("text", String(text == null ? "" : text)));
    if (time !== false) li.appendChild(timeElement(time));
    insert(li);
  }

  function renderUsers(f) {
    var list = Array.isArray(f.users) ? f.users : [];
    var frag = document.createDocumentFragment();
    list.forEach(function (u) {
      var li = document.createElement("li");
      var name = String(u && u.name != null ? u.name : "");
      li.textContent = name;
      if (name === nickname) li.className = "me";
      frag.appendChild(li);
    });
    el.users.replaceChildren(frag);
    var count = typeof f.count === "number" ? f.count : list.length;
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
    toastTimer = setTimeout(function () {
      el.toast.hidden = true;
    }, 4000);
  }

  // ---- outbox ----

  function pendingElement(text) {
    var li = messageElement(nickname, text);
    li.classList.add("own", "pending");
    var t = document.createElement("time");
    t.className = "time";
    t.textContent = "sending…";
    li.appendChild(t);
    return li;
  }

  function queue(text) {
    var item = { text: text, li: pendingElement(text), sent: false };
    outbox.push(item);
    el.messages.appendChild(item.li);
    scrollDown();
    scheduleFlush(0);
  }

  // acknowledge removes the oldest outbox entry with this text: the server
  // echoed it back, so it is recorded and has its ID.
  function acknowledge(text) {
    for (var i = 0; i < outbox.length; i++) {
      if (outbox[i].text === text) {
        outbox[i].li.remove();
        outbox.splice(i, 1);
        return;
      }
    }
  }

  function markWaiting() {
    outbox.forEach(function (item) {
      item.sent = false;
      item.li.querySelector(".time").textContent = "pending";
    });
  }

  function scheduleFlush(delay) {
    if (flushTimer !== null) return;
    flushTimer = setTimeout(flush, delay);
  }

  function flush() {
    flushTimer = null;
    if (!ws || ws.readyState !== WebSocket.OPEN || !historyDone) return;
    for (var i = 0; i < outbox.length; i++) {
      var item = outbox[i];
      if (item.sent) continue;
      try {
        ws.send(JSON.stringify({ type: "message", text: item.text }));
      } catch (e) {
        return;
      }
      item.sent = true;
      item.li.querySelector(".time").textContent = "sending…";
      if (i + 1 < outbox.length) scheduleFlush(SEND_GAP);
      return;
    }
  }

  // After an error frame the server may have dropped a message we sent; we
  // cannot tell which one, so resend whatever is still unacknowledged once
  // acknowledgements had time to arrive.
  function scheduleResend() {
    if (resendTimer !== null) return;
    resendTimer = setTimeout(function () {
      resendTimer = null;
      markWaiting();
      scheduleFlush(0);
    }, RETRY_AFTER_ERROR);
  }

  function failOldestSent() {
    for (var i = 0; i < outbox.length; i++) {
      if (outbox[i].sent) {
        var li = outbox[i].li;
        li.classList.remove("pending");
        li.classList.add("failed");
        li.querySelector(".time").textContent = "not sent";
        outbox.splice(i, 1);
        return;
      }
    }
  }

  // ---- frames ----

  var historyDone = false;

  function onFrame(f) {
    switch (f.type) {
      case "history":
        if (f.reset && everOpened && seen.size > 0) {
          renderNotice("Reconnected. Some messages may be missing.", false, "warn");
        }
        (Array.isArray(f.messages) ? f.messages : []).forEach(renderMessage);
        historyDone = true;
        markWaiting();
        scheduleFlush(0);
        break;
      case "message":
        renderMessage(f);
        break;
      case "users":
        renderUsers(f);
        break;
      case "notice":
        renderNotice(f.text, f.time);
        break;
      case "error":
        showToast(errorText(f));
        if (f.code === "bad_text") {
          failOldestSent();
        } else if (f.code === "rate_limited" || f.code === "unavailable") {
          scheduleResend();
        }
        break;
    }
  }

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

  function url() {
    var scheme = location.protocol === "https:" ? "wss:" : "ws:";
    var u = scheme + "//" + location.host + "/ws/chat/" + encodeURIComponent(room) + "/";
    if (everOpened && lastId !== null) u += "?since=" + encodeURIComponent(lastId);
    return u;
  }

  function connect() {
    retryTimer = null;
    if (stopped) return;
    setStatus(everOpened ? "reconnecting" : "connecting");
    historyDone = false;
    openedThis = false;
    var sock;
    try {
      sock = new WebSocket(url());
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    sock.onopen = function () {
      if (ws !== sock) return;
      openedThis = true;
      everOpened = true;
      attempt = 0;
      failedHandshakes = 0;
      setStatus("open");
    };
    sock.onmessage = function (ev) {
      if (ws !== sock || typeof ev.data !== "string") return;
      var f;
      try {
        f = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (f && typeof f === "object") onFrame(f);
    };
    sock.onclose = function (ev) {
      if (ws !== sock) return;
      ws = null;
      historyDone = false;
      markWaiting();
      if (stopped) {
        setStatus("closed");
        return;
      }
      if (ev.code === 1008) {
        stopped = true;
        setStatus("closed");
        renderNotice("Disconnected by the server (too many errors). Reload the page to rejoin.", false, "warn");
        return;
      }
      if (!openedThis) failedHandshakes++;
      scheduleReconnect();
    };
  }

  function scheduleReconnect() {
    if (stopped || retryTimer !== null) return;
    setStatus(everOpened ? "reconnecting" : "connecting");
    var base = Math.min(BACKOFF_MAX, BACKOFF_MIN * Math.pow(2, attempt));
    attempt++;
    var delay = base * (0.5 + Math.random()); // ±50% jitter
    retryTimer = setTimeout(connect, delay);
    // A handshake that keeps failing may mean the session is gone (403):
    // ask the page itself, which redirects to / without a session.
    if (failedHandshakes > 0 && failedHandshakes % 3 === 0) checkSession();
  }

  function checkSession() {
    fetch(location.pathname, { method: "GET", redirect: "manual", credentials: "same-origin", cache: "no-store" })
      .then(function (resp) {
        if (resp.type === "opaqueredirect" || resp.status === 303) {
          stopped = true;
          clearTimeout(retryTimer);
          setStatus("closed");
          location.assign("/");
        }
      })
      .catch(function () {});
  }

  function reconnectNow() {
    if (stopped || ws !== null) return;
    clearTimeout(retryTimer);
    retryTimer = null;
    attempt = 0;
    connect();
  }

  // ---- user actions ----

  el.form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = el.input.value.trim();
    if (text === "") return;
    if (Array.from(text).length > MAX_TEXT) {
      showToast("A message can be at most " + MAX_TEXT + " characters long.");
      return;
    }
    el.input.value = "";
    queue(text);
    el.input.focus();
  });

  el.leaveForm.addEventListener("submit", function (ev) {
    ev.preventDefault();
    if (stopped && el.leaveForm.dataset.leaving) return;
    stopped = true;
    el.leaveForm.dataset.leaving = "1";
    clearTimeout(retryTimer);
    retryTimer = null;
    var form = el.leaveForm;
    var done = false;
    function post() {
      if (done) return;
      done = true;
      form.submit();
    }
    var sock = ws;
    if (sock && (sock.readyState === WebSocket.OPEN || sock.readyState === WebSocket.CONNECTING)) {
      // Let the 1000 close frame reach the server before the page goes away,
      // so the leave is announced at once; don't wait long for it.
      sock.addEventListener("close", post);
      setTimeout(post, 500);
      sock.close(1000, "leave");
    } else {
      post();
    }
    setStatus("closed");
  });

  window.addEventListener("online", reconnectNow);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") reconnectNow();
  });

  connect();
})();
