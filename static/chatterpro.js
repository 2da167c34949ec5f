// ChatterPro client: the browser side of any ChatterPro consumer.
//
// An ES module with no dependencies and no build step; its TypeScript
// declarations are in chatterpro.d.ts beside it.
//
//   import { Client } from "/static/chatterpro.js";
//   const c = new Client("/ws/echo/");
//   c.on("state", (s) => console.log(s)); // connecting, open, reconnecting, offline
//   c.on("message", (f) => console.log(f.text));
//   c.send({ type: "message", text: "hi" });
//   const data = await c.request({ type: "join", room: "lobby" });
//
// The client opens the route over a websocket, or over Server-Sent Events
// plus HTTP POST when a websocket cannot be opened; reconnects with capped
// exponential backoff and full jitter (at once when the page comes back
// online or visible); detects a dead peer with {"type":"ping"} frames;
// resumes with ?since=<the last message ID it saw>; matches replies to
// requests by "ref"; and keeps frames sent while not open in an outbox,
// sent once open at a pace under the server's rate limit and error budget.

/** @typedef {"connecting"|"open"|"reconnecting"|"offline"} State */

const DEFAULTS = {
  backoff: { min: 500, max: 10000 },
  pingInterval: 25000,
  pingTimeout: 10000,
  openTimeout: 10000,
  requestTimeout: 10000,
  closeTimeout: 1000,
  transports: ["websocket", "sse"],
  fallbackAfter: 2,
  rate: { perSecond: 10, burst: 20 },
  errorBudget: { count: 20, window: 10000 },
};

// Event names of the client itself; a frame of one of these types reaches
// only "frame" listeners.
const RESERVED = new Set(["state", "close", "frame"]);

// Most frames one POST carries.
const MAX_BATCH = 20;

// Close code reported when the client drops a connection itself (no pong,
// no open in time, a stream the server no longer knows).
const ABNORMAL = 1006;

/** Error of a refused or unanswered request; code is the server's word. */
export class RequestError extends Error {
  /**
   * @param {string} code
   * @param {string} [text]
   */
  constructor(code, text) {
    super(text ? code + ": " + text : code);
    this.name = "RequestError";
    this.code = code;
    this.text = text || "";
  }
}

/**
 * backoffDelay is the wait before reconnect attempt number attempt (0 for
 * the first): full jitter, uniform in [0, min(max, min * 2^attempt)).
 * @param {number} attempt
 * @param {number} min
 * @param {number} max
 * @param {() => number} [random]
 */
export function backoffDelay(attempt, min, max, random = Math.random) {
  const cap = Math.min(max, min * Math.pow(2, Math.min(attempt, 30)));
  return Math.floor(random() * cap);
}

/**
 * defaultResumeId says which message ID a frame carries for resuming: the
 * last message of a "history" frame, the "id" of any other frame with a
 * string id. An "older" frame pages back in time, so it carries none.
 * @param {any} f
 * @returns {string|undefined}
 */
export function defaultResumeId(f) {
  if (f.type === "older") return undefined;
  if (f.type === "history") {
    const ms = Array.isArray(f.messages) ? f.messages : [];
    for (let i = ms.length - 1; i >= 0; i--) {
      if (ms[i] && typeof ms[i].id === "string") return ms[i].id;
    }
    return undefined;
  }
  return typeof f.id === "string" ? f.id : undefined;
}

// bucket is a token bucket: perSecond tokens a second, at most burst saved.
class Bucket {
  constructor(perSecond, burst) {
    this.rate = perSecond / 1000; // tokens per ms
    this.cap = Math.max(1, burst);
    this.tokens = this.cap;
    this.at = Date.now();
  }
  refill() {
    const now = Date.now();
    this.tokens = Math.min(this.cap, this.tokens + (now - this.at) * this.rate);
    this.at = now;
  }
  // take spends a token and returns 0, or returns how many ms until one.
  take() {
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate));
  }
  drain() {
    this.refill();
    this.tokens = Math.min(this.tokens, 0);
  }
}

function report(err) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(err);
  else
    setTimeout(() => {
      throw err;
    }, 0);
}

/** A client of one ChatterPro consumer route. */
export class Client {
  /**
   * @param {string} url the consumer's route: a path ("/ws/chat/lobby/"), or
   *   an absolute ws:, wss:, http: or https: URL.
   * @param {object} [options] see chatterpro.d.ts for each field and its default.
   */
  constructor(url, options = {}) {
    const o = options;
    this._rawUrl = String(url);
    this._lastId = o.since == null || o.since === "" ? null : String(o.since);
    this._backoff = { ...DEFAULTS.backoff, ...(o.backoff || {}) };
    this._pingInterval = o.pingInterval ?? DEFAULTS.pingInterval;
    this._pingTimeout = o.pingTimeout ?? DEFAULTS.pingTimeout;
    this._openTimeout = o.openTimeout ?? DEFAULTS.openTimeout;
    this._requestTimeout = o.requestTimeout ?? DEFAULTS.requestTimeout;
    this._closeTimeout = o.closeTimeout ?? DEFAULTS.closeTimeout;
    this._fallbackAfter = o.fallbackAfter ?? DEFAULTS.fallbackAfter;
    this._resumeId = o.resumeId || defaultResumeId;
    this._transports = (o.transports || DEFAULTS.transports).filter((k) => k === "websocket" || k === "sse");
    if (this._transports.length === 0) throw new TypeError("chatterpro: no known transport in options.transports");
    this._WebSocket = o.WebSocket || globalThis.WebSocket;
    this._EventSource = o.EventSource || globalThis.EventSource;
    this._fetch = o.fetch || (globalThis.fetch ? globalThis.fetch.bind(globalThis) : undefined);

    // Pacing: stay a tenth under the server's limits, for network jitter.
    const rate = o.rate === undefined ? DEFAULTS.rate : o.rate;
    this._bucket = rate ? new Bucket(rate.perSecond * 0.9, Math.floor(rate.burst * 0.9)) : null;
    const eb = { ...DEFAULTS.errorBudget, ...(o.errorBudget || {}) };
    this._errWindow = eb.window;
    this._errPause = Math.max(1, Math.floor(eb.count * 0.75)); // pause sending at 3/4 of the budget
    this._errors = []; // times of error frames and error replies in the window

    this._listeners = new Map();
    this._state = null;
    this._t = null; // the current transport
    this._ti = 0; // index of the transport in use or being tried
    this._failures = 0; // attempts on this transport in a row that never opened
    this._stuck = false; // a transport opened once: keep using it
    this._everOpened = false;
    this._attempt = 0;
    this._stopped = false;
    this._outbox = []; // {frame, done, ref, internal}
    this._pending = new Map(); // ref -> {resolve, reject, timer, conn}
    this._nextRef = 1;
    this._retryTimer = null;
    this._pumpTimer = null;
    this._pingTimer = null;
    this._pongTimer = null;
    this._lastRx = 0;
    this._closeWaiters = [];

    this._onOnline = () => this.reconnectNow();
    this._onVisible = () => {
      if (globalThis.document && globalThis.document.visibilityState !== "visible") return;
      if (!this._t || !this._t.opened) return this.reconnectNow();
      // Timers sleep in a hidden page: check the connection now, unless
      // it spoke lately (a tab switched back and forth pings rarely).
      if (Date.now() - this._lastRx >= Math.min(5000, this._pingInterval / 2)) this._ping();
    };
    if (typeof globalThis.addEventListener === "function") globalThis.addEventListener("online", this._onOnline);
    if (globalThis.document && typeof globalThis.document.addEventListener === "function") {
      globalThis.document.addEventListener("visibilitychange", this._onVisible);
    }
    // Start after the caller had a chance to add listeners.
    queueMicrotask(() => this._connect());
  }

  /** @returns {State} */
  get state() {
    return this._state || "connecting";
  }

  /** The transport in use, or the one being tried: "websocket" or "sse". */
  get transport() {
    return this._transports[this._ti];
  }

  /** The last message ID seen, passed as since when reconnecting; null before any. */
  get lastId() {
    return this._lastId;
  }

  /**
   * on adds a listener: "state", "close", "frame" (every frame), or a frame
   * type ("message", "error", ...). It returns a function that removes it.
   */
  on(type, fn) {
    let set = this._listeners.get(type);
    if (!set) this._listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => this.off(type, fn);
  }

  /** off removes a listener added with on. */
  off(type, fn) {
    const set = this._listeners.get(type);
    if (set) set.delete(fn);
  }

  /**
   * send queues a frame (an object with a string "type") and sends it once
   * the connection is open, paced. The promise resolves true once the frame
   * was handed to the connection (a websocket write, or a POST the server
   * answered 204), false if the client was closed first. It never rejects.
   */
  send(frame) {
    checkFrame(frame);
    if (this._stopped) return Promise.resolve(false);
    return new Promise((resolve) => {
      this._outbox.push({ frame, done: resolve, ref: null, internal: false });
      this._pump();
    });
  }

  /**
   * request sends a frame with a fresh "ref" and resolves with the data of
   * its "ok" reply. It rejects with a RequestError: the reply's code on an
   * "error" reply, "timeout" when no reply came in time, "disconnected"
   * when the connection carrying it was lost first, "closed" when the
   * client was closed.
   */
  request(frame, options = {}) {
    checkFrame(frame);
    if (this._stopped) return Promise.reject(new RequestError("closed", "the client is closed"));
    const ref = this._nextRef++;
    const timeout = options.timeout ?? this._requestTimeout;
    return new Promise((resolve, reject) => {
      const entry = { frame: { ...frame, ref }, done: null, ref, internal: false };
      const p = { resolve, reject, timer: null, conn: null };
      p.timer = setTimeout(() => {
        this._unqueue(entry);
        this._settle(ref, new RequestError("timeout", "no reply within " + timeout + " ms"));
      }, timeout);
      this._pending.set(ref, p);
      this._outbox.push(entry);
      this._pump();
    });
  }

  /**
   * close ends the connection with code (1000, or 3000-4999) for good: no
   * reconnect; queued frames are dropped, open requests rejected. The
   * promise resolves once the connection is closed, or after closeTimeout.
   */
  close(code = 1000, reason = "") {
    if (code !== 1000 && !(code >= 3000 && code <= 4999)) {
      throw new RangeError("chatterpro: a client closes with 1000 or 3000-4999, not " + code);
    }
    if (this._stopped) {
      // Closed already, or closing: wait for that.
      if (!this._t) return Promise.resolve();
      return new Promise((resolve) => this._closeWaiters.push(resolve));
    }
    this._stop();
    const t = this._t;
    if (!t) {
      this._setState("offline");
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this._closeWaiters.push(resolve);
      const timer = setTimeout(() => {
        if (this._t === t) {
          t.abandon();
          this._closed(t, code, reason);
        }
      }, this._closeTimeout);
      this._closeWaiters.push(() => clearTimeout(timer));
      t.close(code, reason);
    });
  }

  /**
   * reconnectNow skips the backoff wait: when waiting to reconnect it
   * connects at once. The client calls it when the page comes back online
   * or visible.
   */
  reconnectNow() {
    if (this._stopped || this._t || this._state === null) return;
    clearTimeout(this._retryTimer);
    this._retryTimer = null;
    this._attempt = 0;
    this._connect();
  }

  // ---- internals ----

  _emit(type, arg) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(arg);
      } catch (err) {
        report(err);
      }
    }
  }

  _setState(s) {
    if (this._state === s) return;
    this._state = s;
    this._emit("state", s);
  }

  _url(kind) {
    const base = globalThis.location ? globalThis.location.href : undefined;
    const u = new URL(this._rawUrl, base);
    if (kind === "websocket") {
      if (u.protocol === "http:") u.protocol = "ws:";
      else if (u.protocol === "https:") u.protocol = "wss:";
    } else {
      if (u.protocol === "ws:") u.protocol = "http:";
      else if (u.protocol === "wss:") u.protocol = "https:";
      u.searchParams.set("transport", "sse");
    }
    if (this._lastId !== null) u.searchParams.set("since", this._lastId);
    return u.toString();
  }

  _connect() {
    this._retryTimer = null;
    if (this._stopped || this._t) return;
    this._setState(this._everOpened ? "reconnecting" : "connecting");
    const kind = this._transports[this._ti];
    let t;
    try {
      t = kind === "sse" ? new SSETransport(this, this._url(kind)) : new WSTransport(this, this._url(kind));
    } catch (err) {
      // A constructor that throws (bad URL, refused by the page's policy)
      // counts as a failed attempt.
      this._failed();
      this._scheduleReconnect();
      return;
    }
    this._t = t;
    t.openTimer = setTimeout(() => {
      if (this._t === t && !t.opened) {
        t.abandon();
        this._closed(t, ABNORMAL, "not open in time");
      }
    }, this._openTimeout);
  }

  // _failed counts an attempt that never opened, and moves on to the next
  // transport after fallbackAfter of them in a row while none ever opened.
  _failed() {
    this._failures++;
    if (!this._stuck && this._failures >= this._fallbackAfter && this._transports.length > 1) {
      this._ti = (this._ti + 1) % this._transports.length;
      this._failures = 0;
    }
  }

  _scheduleReconnect() {
    if (this._stopped || this._retryTimer !== null) return;
    this._setState(this._everOpened ? "reconnecting" : "connecting");
    const delay = backoffDelay(this._attempt, this._backoff.min, this._backoff.max);
    this._attempt++;
    this._retryTimer = setTimeout(() => this._connect(), delay);
  }

  // _opened runs when transport t is open.
  _opened(t) {
    if (this._t !== t) return;
    t.opened = true;
    clearTimeout(t.openTimer);
    this._everOpened = true;
    this._stuck = true;
    this._failures = 0;
    this._attempt = 0;
    this._lastRx = Date.now();
    this._setState("open");
    this._armPing(this._pingInterval);
    this._pump();
  }

  // _received handles one frame's text from transport t.
  _received(t, text) {
    if (this._t !== t || typeof text !== "string") return;
    this._lastRx = Date.now();
    if (this._pongTimer !== null) {
      // Any frame shows the peer is alive.
      clearTimeout(this._pongTimer);
      this._pongTimer = null;
      this._armPing(this._pingInterval);
    }
    let f;
    try {
      f = JSON.parse(text);
    } catch (err) {
      return;
    }
    if (!f || typeof f !== "object" || Array.isArray(f)) return;
    const id = this._resumeId(f);
    if (typeof id === "string" && id !== "") this._lastId = id;
    if (f.type === "error" || (f.type === "reply" && f.status === "error")) this._countError(f.code);
    if (f.type === "pong") return;
    if (f.type === "reply" && this._pending.has(f.ref)) {
      if (f.status === "ok") this._settle(f.ref, null, f.data);
      else this._settle(f.ref, new RequestError(String(f.code || "error"), f.text == null ? "" : String(f.text)));
      return;
    }
    this._emit("frame", f);
    if (typeof f.type === "string" && !RESERVED.has(f.type)) this._emit(f.type, f);
  }

  _countError(code) {
    this._pruneErrors();
    this._errors.push(Date.now());
    if (code === "rate_limited" && this._bucket) this._bucket.drain();
    this._pump();
  }

  // _closed runs when transport t has ended, whoever ended it.
  _closed(t, code, reason) {
    if (this._t !== t) return;
    this._t = null;
    clearTimeout(t.openTimer);
    clearTimeout(this._pingTimer);
    clearTimeout(this._pongTimer);
    clearTimeout(this._pumpTimer);
    this._pingTimer = this._pongTimer = this._pumpTimer = null;
    this._outbox = this._outbox.filter((e) => !e.internal);
    for (const [ref, p] of this._pending) {
      if (p.conn === t) this._settle(ref, new RequestError("disconnected", "the connection was lost before the reply"));
    }
    const opened = t.opened;
    code = typeof code === "number" ? code : ABNORMAL;
    reason = reason == null ? "" : String(reason);
    if (!this._stopped && (code === 1000 || code === 1008)) this._stop();
    const reconnect = !this._stopped;
    this._emit("close", { code, reason, opened, reconnect });
    if (!reconnect) {
      this._setState("offline");
      const ws = this._closeWaiters;
      this._closeWaiters = [];
      for (const fn of ws) fn();
      return;
    }
    if (!opened) this._failed();
    this._scheduleReconnect();
  }

  // _stop ends reconnecting for good: timers, listeners, queue, requests.
  _stop() {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    clearTimeout(this._pumpTimer);
    this._retryTimer = this._pumpTimer = null;
    if (typeof globalThis.removeEventListener === "function") globalThis.removeEventListener("online", this._onOnline);
    if (globalThis.document && typeof globalThis.document.removeEventListener === "function") {
      globalThis.document.removeEventListener("visibilitychange", this._onVisible);
    }
    const out = this._outbox;
    this._outbox = [];
    for (const e of out) if (e.done) e.done(false);
    for (const ref of [...this._pending.keys()]) this._settle(ref, new RequestError("closed", "the client is closed"));
  }

  _settle(ref, err, data) {
    const p = this._pending.get(ref);
    if (!p) return;
    this._pending.delete(ref);
    clearTimeout(p.timer);
    if (err) p.reject(err);
    else p.resolve(data);
  }

  _unqueue(entry) {
    const i = this._outbox.indexOf(entry);
    if (i >= 0) this._outbox.splice(i, 1);
  }

  // ---- pings ----

  _armPing(delay) {
    clearTimeout(this._pingTimer);
    this._pingTimer = null;
    if (!(this._pingInterval > 0)) return;
    this._pingTimer = setTimeout(() => {
      this._pingTimer = null;
      const idle = Date.now() - this._lastRx;
      if (idle < this._pingInterval) {
        this._armPing(this._pingInterval - idle);
        return;
      }
      this._ping();
    }, delay);
  }

  // _ping sends a ping and drops the connection unless a frame arrives
  // within pingTimeout.
  _ping() {
    const t = this._t;
    if (!t || !t.opened || this._pongTimer !== null) return;
    this._pongTimer = setTimeout(() => {
      this._pongTimer = null;
      if (this._t !== t) return;
      t.abandon();
      this._closed(t, ABNORMAL, "no pong within " + this._pingTimeout + " ms");
    }, this._pingTimeout);
    this._outbox.unshift({ frame: { type: "ping" }, done: null, ref: null, internal: true });
    this._pump();
    this._armPing(this._pingInterval + this._pingTimeout);
  }

  // ---- sending ----

  // _wait says how long the entry at the head of the outbox must wait: 0
  // means send it now (and a token was spent).
  _wait(e) {
    if (e.internal) return 0;
    this._pruneErrors();
    if (this._errors.length >= this._errPause) return this._errors[0] + this._errWindow - Date.now() + 1;
    return this._bucket ? this._bucket.take() : 0;
  }

  _pruneErrors() {
    const now = Date.now();
    while (this._errors.length && now - this._errors[0] >= this._errWindow) this._errors.shift();
  }

  _pump() {
    if (this._pumpTimer !== null) {
      clearTimeout(this._pumpTimer);
      this._pumpTimer = null;
    }
    const t = this._t;
    if (!t || !t.opened) return;
    while (this._outbox.length && t.canWrite()) {
      const batch = [];
      let wait = 0;
      while (this._outbox.length && batch.length < t.maxBatch) {
        wait = this._wait(this._outbox[0]);
        if (wait > 0) break;
        batch.push(this._outbox.shift());
      }
      if (batch.length) t.write(batch);
      if (wait > 0) {
        this._pumpTimer = setTimeout(() => {
          this._pumpTimer = null;
          this._pump();
        }, wait);
        return;
      }
      if (this._t !== t) return; // the write ended the transport
    }
  }

  // _written runs once entries are handed to transport t.
  _written(t, entries) {
    for (const e of entries) {
      if (e.ref !== null) {
        const p = this._pending.get(e.ref);
        if (p) p.conn = t;
      }
      if (e.done) e.done(true);
    }
  }

  // _requeue puts entries that did not reach the server back at the head.
  _requeue(entries) {
    const keep = entries.filter((e) => !e.internal && (e.ref === null || this._pending.has(e.ref)));
    if (this._stopped) {
      for (const e of keep) if (e.done) e.done(false);
      return;
    }
    this._outbox.unshift(...keep);
  }

  // _dropped gives up on entries the server refused as malformed or too big.
  _dropped(entries, code) {
    for (const e of entries) {
      if (e.ref !== null) this._settle(e.ref, new RequestError(code, "the server refused the frame"));
      if (e.done) e.done(false);
    }
  }
}

function checkFrame(frame) {
  if (!frame || typeof frame !== "object" || Array.isArray(frame) || typeof frame.type !== "string") {
    throw new TypeError('chatterpro: a frame is an object with a string "type"');
  }
}

// WSTransport carries frames over a websocket.
class WSTransport {
  constructor(client, url) {
    this.client = client;
    this.kind = "websocket";
    this.opened = false;
    this.openTimer = null;
    this.maxBatch = 1;
    const ws = new client._WebSocket(url);
    this.ws = ws;
    ws.onopen = () => client._opened(this);
    ws.onmessage = (ev) => client._received(this, ev.data);
    ws.onclose = (ev) => client._closed(this, ev.code, ev.reason);
    ws.onerror = () => {}; // a close event follows
  }
  canWrite() {
    return true;
  }
  write(entries) {
    try {
      for (const e of entries) this.ws.send(JSON.stringify(e.frame));
    } catch (err) {
      this.client._requeue(entries);
      this.abandon();
      this.client._closed(this, ABNORMAL, "write failed");
      return;
    }
    this.client._written(this, entries);
  }
  close(code, reason) {
    try {
      this.ws.close(code, reason);
    } catch (err) {
      this.abandon();
      this.client._closed(this, code, reason);
    }
  }
  // abandon forgets the socket at once: its events no longer count.
  abandon() {
    const ws = this.ws;
    ws.onopen = ws.onmessage = ws.onclose = null;
    try {
      ws.close();
    } catch (err) {
      // already closed
    }
  }
}

// SSETransport carries server frames over Server-Sent Events and client
// frames over POSTs: one at a time, numbered by seq from 1.
class SSETransport {
  constructor(client, url) {
    this.client = client;
    this.kind = "sse";
    this.opened = false;
    this.openTimer = null;
    this.maxBatch = MAX_BATCH;
    this.url = url;
    this.stream = null;
    this.seq = 1; // of the next POST; it grows only when one is applied
    this.posting = false;
    this.ended = false;
    this.retry = null;
    // The entries of the POST under way (sent, or waiting to be retried),
    // until an answer settles them. If the stream ends first they go back
    // to the client's outbox at once, ahead of anything sent after them, so
    // the next stream carries the client's frames in the order sent; a late
    // answer to that POST is then ignored.
    this.inflight = null;
    // Cookies go along, as on a websocket, also to another allowed origin.
    const es = new client._EventSource(url, { withCredentials: true });
    this.es = es;
    // The server's first event is named "open" too; the browser's own open
    // event has no data.
    es.addEventListener("open", (ev) => {
      if (typeof ev.data !== "string") return;
      let d;
      try {
        d = JSON.parse(ev.data);
      } catch (err) {
        d = null;
      }
      if (!d || typeof d.stream !== "string" || d.stream === "") {
        this.end(ABNORMAL, "bad open event");
        return;
      }
      this.stream = d.stream;
      client._opened(this);
    });
    es.addEventListener("message", (ev) => client._received(this, ev.data));
    es.addEventListener("close", (ev) => {
      let d;
      try {
        d = JSON.parse(ev.data);
      } catch (err) {
        d = null;
      }
      this.end(d && typeof d.code === "number" ? d.code : ABNORMAL, d && d.reason);
    });
    // A refusal or a lost stream. EventSource would retry on its own, with
    // the old since; the client reconnects itself instead.
    es.onerror = () => this.end(ABNORMAL, "");
  }

  postURL(extra) {
    const u = new URL(this.url);
    u.searchParams.delete("since");
    u.searchParams.set("transport", "sse");
    u.searchParams.set("stream", this.stream);
    for (const k in extra) u.searchParams.set(k, extra[k]);
    return u.toString();
  }

  canWrite() {
    return !this.posting && !this.ended;
  }

  write(entries) {
    this.posting = true;
    this.inflight = entries;
    const body = JSON.stringify({ seq: this.seq, frames: entries.map((e) => e.frame) });
    this.post(entries, body, 0);
  }

  post(entries, body, tries) {
    const c = this.client;
    const retry = () => {
      this.retry = setTimeout(() => {
        this.retry = null;
        this.post(entries, body, tries + 1);
      }, 250 + backoffDelay(tries, c._backoff.min, c._backoff.max));
    };
    c._fetch(this.postURL({}), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
      credentials: "include",
      cache: "no-store",
    }).then(
      (res) => {
        if (this.ended) return; // abandon gave the entries back
        const s = res.status;
        if (s >= 200 && s < 300) {
          this.inflight = null;
          this.seq++;
          this.posting = false;
          c._written(this, entries);
        } else if (s === 404 || s === 403) {
          // The stream is gone (or not ours): the frames wait for the next one.
          this.inflight = null;
          this.posting = false;
          c._requeue(entries);
          this.end(ABNORMAL, "stream refused the POST (" + s + ")");
          return;
        } else if (s === 413 && entries.length > 1) {
          this.inflight = null;
          this.posting = false;
          this.maxBatch = 1;
          c._requeue(entries);
        } else if (s === 400 || s === 413) {
          this.inflight = null;
          this.posting = false;
          c._dropped(entries, s === 413 ? "too_big" : "bad_frame");
        } else {
          if (s === 429 && c._bucket) c._bucket.drain();
          retry(); // 429, 503, ...: the same seq again, later
          return;
        }
        if (!this.ended) c._pump();
      },
      () => {
        // The network: the same seq again, harmless if it was applied.
        if (!this.ended) retry();
      },
    );
  }

  close(code, reason) {
    if (!this.stream || this.ended) {
      this.end(code, reason);
      return;
    }
    const done = () => this.end(code, reason);
    this.client
      ._fetch(this.postURL({ close: String(code) }), {
        method: "POST",
        credentials: "include",
        cache: "no-store",
        keepalive: true,
      })
      .then(done, done);
  }

  // end closes the stream and reports it, once.
  end(code, reason) {
    if (this.ended) return;
    this.abandon();
    this.client._closed(this, code, reason);
  }

  abandon() {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.retry);
    this.retry = null;
    if (this.inflight) this.client._requeue(this.inflight);
    this.inflight = null;
    this.es.onerror = null;
    this.es.close();
  }
}
