// Fakes of the browser's WebSocket, EventSource and fetch, driven by the
// tests: every instance and request is recorded, and the test decides when
// a socket opens, what it receives, and how a POST is answered.

export class FakeWebSocket {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    this.closedWith = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    FakeWebSocket.instances.push(this);
  }
  send(data) {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(JSON.parse(data));
  }
  // close is the client's close: the server answers at once (a microtask later).
  close(code, reason) {
    this.closedWith = { code, reason };
    if (this.readyState >= 2) return;
    this.readyState = 2;
    queueMicrotask(() => this._fireClose(code ?? 1005, reason ?? ""));
  }
  // Test controls.
  open() {
    this.readyState = 1;
    this.onopen && this.onopen({});
  }
  receive(frame) {
    this.onmessage && this.onmessage({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
  }
  serverClose(code, reason = "") {
    this._fireClose(code, reason);
  }
  // fail is an upgrade that did not succeed: an error, then close 1006.
  fail() {
    this.onerror && this.onerror({});
    this._fireClose(1006, "");
  }
  _fireClose(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.onclose && this.onclose({ code, reason });
  }
  static last() {
    return FakeWebSocket.instances[FakeWebSocket.instances.length - 1];
  }
}

export class FakeEventSource {
  static instances = [];
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.listeners = new Map();
    this.onerror = null;
    this.closed = false;
    FakeEventSource.instances.push(this);
  }
  addEventListener(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, []);
    this.listeners.get(type).push(fn);
  }
  close() {
    this.closed = true;
    this.readyState = 2;
  }
  _dispatch(type, ev) {
    if (this.closed) return;
    for (const fn of this.listeners.get(type) || []) fn(ev);
  }
  // Test controls: the browser's own open event (no data), then the server's.
  open(stream) {
    this.readyState = 1;
    this._dispatch("open", { type: "open" });
    this._dispatch("open", { type: "open", data: JSON.stringify({ stream }) });
  }
  receive(frame) {
    this._dispatch("message", { data: JSON.stringify(frame) });
  }
  serverClose(code, reason = "") {
    this._dispatch("close", { data: JSON.stringify({ code, reason }) });
  }
  error() {
    if (!this.closed && this.onerror) this.onerror({});
  }
  static last() {
    return FakeEventSource.instances[FakeEventSource.instances.length - 1];
  }
}

// fakeFetch records requests; each waits until the test answers it with
// respond(status) or fail().
export function fakeFetch() {
  const calls = [];
  const fetch = (url, init = {}) =>
    new Promise((resolve, reject) => {
      calls.push({
        url: new URL(url),
        init,
        body: init.body ? JSON.parse(init.body) : null,
        answered: false,
        respond(status) {
          this.answered = true;
          resolve({ status, ok: status >= 200 && status < 300 });
        },
        fail() {
          this.answered = true;
          reject(new TypeError("network error"));
        },
      });
    });
  return { fetch, calls };
}

export function reset() {
  FakeWebSocket.instances = [];
  FakeEventSource.instances = [];
}

// settle lets pending promise callbacks and microtasks run.
export async function settle() {
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
}
