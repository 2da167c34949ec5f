// Unit tests of static/chatterpro.js: node --test client/jstest/
import { test } from "node:test";
import assert from "node:assert/strict";

import { Client, RequestError, backoffDelay, defaultResumeId } from "../../static/chatterpro.js";
import { FakeWebSocket, FakeEventSource, fakeFetch, reset, settle } from "./fakes.mjs";

// setup mocks the clock and returns a client factory whose clients use the
// fakes; every client made is closed when the test ends.
function setup(t, random) {
  reset();
  globalThis.location = { href: "http://h/page" };
  t.after(() => delete globalThis.location);
  t.mock.timers.enable({ apis: ["setTimeout", "Date"] });
  if (random) t.mock.method(Math, "random", random);
  const net = fakeFetch();
  const clients = [];
  const make = (url, opts = {}) => {
    const c = new Client(url, { WebSocket: FakeWebSocket, EventSource: FakeEventSource, fetch: net.fetch, ...opts });
    clients.push(c);
    return c;
  };
  t.after(() => {
    for (const c of clients) c._stop();
  });
  return { make, net, tick: (ms) => t.mock.timers.tick(ms) };
}

// record collects a client's events.
function record(c) {
  const ev = { states: [], closes: [], frames: [] };
  c.on("state", (s) => ev.states.push(s));
  c.on("close", (i) => ev.closes.push(i));
  c.on("frame", (f) => ev.frames.push(f));
  return ev;
}

// serverBucket replays send times against the server's limiter (perSecond
// a second, burst saved) and returns how many frames it would refuse.
function refusedBy(times, perSecond, burst) {
  let tokens = burst;
  let at = times.length ? times[0] : 0;
  let refused = 0;
  for (const ts of times) {
    tokens = Math.min(burst, tokens + ((ts - at) * perSecond) / 1000);
    at = ts;
    if (tokens >= 1) tokens -= 1;
    else refused++;
  }
  return refused;
}

test("backoffDelay: full jitter under a capped exponential", () => {
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = Math.min(10000, 500 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, 500, 10000, () => 0), 0);
    assert.equal(backoffDelay(attempt, 500, 10000, () => 0.5), Math.floor(cap / 2));
    assert.ok(backoffDelay(attempt, 500, 10000, () => 0.999999) < cap);
    let lo = Infinity;
    let hi = -1;
    for (let i = 0; i < 2000; i++) {
      const d = backoffDelay(attempt, 500, 10000);
      assert.ok(d >= 0 && d < cap, `attempt ${attempt}: ${d} outside [0, ${cap})`);
      lo = Math.min(lo, d);
      hi = Math.max(hi, d);
    }
    // Full jitter: the waits spread over the whole range.
    assert.ok(lo < cap * 0.1 && hi > cap * 0.9, `attempt ${attempt}: waits ${lo}..${hi} of ${cap}`);
  }
  assert.equal(backoffDelay(1000, 500, 10000, () => 0.5), 5000, "a huge attempt stays capped");
});

test("reconnect waits follow the backoff, and reset once open", async (t) => {
  const { make, tick } = setup(t, () => 0.5);
  const c = make("ws://h/ws/x/", { backoff: { min: 100, max: 1000 }, transports: ["websocket"] });
  await settle();
  assert.equal(FakeWebSocket.instances.length, 1);
  // Failed attempts: waits of half of 100, 200, 400, 800, 1000, 1000.
  for (const wait of [50, 100, 200, 400, 500, 500]) {
    FakeWebSocket.last().fail();
    const n = FakeWebSocket.instances.length;
    tick(wait - 1);
    assert.equal(FakeWebSocket.instances.length, n, `reconnected before ${wait} ms`);
    tick(1);
    assert.equal(FakeWebSocket.instances.length, n + 1, `not reconnected after ${wait} ms`);
  }
  FakeWebSocket.last().open();
  FakeWebSocket.last().serverClose(1011, "oops");
  tick(49);
  assert.equal(FakeWebSocket.instances.length, 7);
  tick(1);
  assert.equal(FakeWebSocket.instances.length, 8, "after an open the backoff starts over");
  assert.equal(c.state, "reconnecting");
});

test("state events: connecting, open, reconnecting, offline", async (t) => {
  const { make, tick } = setup(t, () => 0);
  const c = make("/ws/x/", { transports: ["websocket"] });
  const ev = record(c);
  await settle();
  assert.deepEqual(ev.states, ["connecting"]);
  FakeWebSocket.last().fail();
  assert.deepEqual(ev.states, ["connecting"], "a failed first attempt is still connecting");
  tick(0);
  FakeWebSocket.last().open();
  assert.deepEqual(ev.states, ["connecting", "open"]);
  FakeWebSocket.last().serverClose(1012, "restart");
  assert.deepEqual(ev.states, ["connecting", "open", "reconnecting"]);
  assert.deepEqual(ev.closes.at(-1), { code: 1012, reason: "restart", opened: true, reconnect: true });
  tick(0);
  FakeWebSocket.last().open();
  const closed = c.close(1000, "bye");
  await settle();
  await closed;
  assert.deepEqual(ev.states, ["connecting", "open", "reconnecting", "open", "offline"]);
  assert.deepEqual(FakeWebSocket.last().closedWith, { code: 1000, reason: "bye" });
  assert.deepEqual(ev.closes.at(-1), { code: 1000, reason: "bye", opened: true, reconnect: false });
  const n = FakeWebSocket.instances.length;
  tick(60000);
  assert.equal(FakeWebSocket.instances.length, n, "no reconnect after close()");
  assert.throws(() => c.close(1008), RangeError);
  await c.close(); // again: nothing more to do
});

test("close while closing waits for the same close", async (t) => {
  const { make, net } = setup(t, () => 0);
  const c = make("http://h/ws/x/", { transports: ["sse"] });
  await settle();
  FakeEventSource.last().open("s");
  let first = false;
  let second = false;
  c.close(1000).then(() => (first = true));
  c.close(4000).then(() => (second = true));
  await settle();
  assert.equal(net.calls.length, 1, "one close POST");
  assert.equal(net.calls[0].url.searchParams.get("close"), "1000");
  assert.equal(first || second, false);
  net.calls[0].respond(204);
  await settle();
  assert.ok(first && second);
  assert.equal(c.state, "offline");
});

test("no reconnect after the server closes with 1000 or 1008", async (t) => {
  for (const code of [1000, 1008]) {
    const { make, tick } = setup(t, () => 0);
    const c = make("/ws/x/", { transports: ["websocket"] });
    const ev = record(c);
    await settle();
    FakeWebSocket.last().open();
    FakeWebSocket.last().serverClose(code, "policy");
    assert.equal(c.state, "offline");
    assert.deepEqual(ev.closes, [{ code, reason: "policy", opened: true, reconnect: false }]);
    tick(60000);
    assert.equal(FakeWebSocket.instances.length, 1, `reconnected after ${code}`);
    assert.equal(await c.send({ type: "message" }), false, "a send after the end resolves false");
    t.mock.timers.reset();
  }
});

test("frames reach frame and type listeners; URLs get the right scheme", async (t) => {
  const { make } = setup(t);
  globalThis.location = { href: "https://example.test/chat/room" };
  const c = make("/ws/chat/a%20b/", { transports: ["websocket"] });
  const ev = record(c);
  const msgs = [];
  c.on("message", (f) => msgs.push(f.text));
  const off = c.on("notice", () => assert.fail("removed listener called"));
  off();
  await settle();
  assert.equal(FakeWebSocket.last().url, "wss://example.test/ws/chat/a%20b/");
  FakeWebSocket.last().open();
  FakeWebSocket.last().receive({ type: "message", id: "1-0", text: "hi" });
  FakeWebSocket.last().receive({ type: "notice", text: "x" });
  FakeWebSocket.last().receive({ type: "close", text: "a frame named like an event" });
  FakeWebSocket.last().receive("not json");
  FakeWebSocket.last().receive({ type: "pong" });
  assert.deepEqual(msgs, ["hi"]);
  assert.deepEqual(
    ev.frames.map((f) => f.type),
    ["message", "notice", "close"],
  );
  assert.equal(ev.closes.length, 0, 'a frame of type "close" is not a close event');
});

test("since: the last message ID seen is passed on reconnect", async (t) => {
  const { make, tick } = setup(t, () => 0);
  const c = make("ws://h/ws/x/?room=1", { since: "0-1", transports: ["websocket"] });
  await settle();
  assert.equal(new URL(FakeWebSocket.last().url).searchParams.get("since"), "0-1");
  FakeWebSocket.last().open();
  FakeWebSocket.last().receive({ type: "history", messages: [{ id: "1-0" }, { id: "2-0" }] });
  assert.equal(c.lastId, "2-0");
  FakeWebSocket.last().receive({ type: "message", id: "3-0", text: "x" });
  FakeWebSocket.last().receive({ type: "older", messages: [{ id: "0-5" }], more: false });
  FakeWebSocket.last().receive({ type: "users", users: [] });
  assert.equal(c.lastId, "3-0", "an older page or a frame without id leaves since alone");
  FakeWebSocket.last().serverClose(1006);
  tick(0);
  const u = new URL(FakeWebSocket.last().url);
  assert.equal(u.searchParams.get("since"), "3-0");
  assert.equal(u.searchParams.get("room"), "1", "the route's own query is kept");

  // A hook decides which frames carry resumable IDs.
  const d = make("ws://h/ws/y/", { transports: ["websocket"], resumeId: (f) => (f.type === "event" ? f.seq : undefined) });
  await settle();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.receive({ type: "message", id: "9-9" });
  ws.receive({ type: "event", seq: "e7" });
  assert.equal(d.lastId, "e7");
  assert.equal(defaultResumeId({ type: "history", messages: [] }), undefined);
});

test("outbox: sends made while offline go once open, in order, under the server's rate limit", async (t) => {
  const { make, tick } = setup(t, () => 0);
  const c = make("/ws/x/", { transports: ["websocket"], rate: { perSecond: 10, burst: 20 } });
  await settle();
  const results = [];
  for (let i = 0; i < 60; i++) c.send({ type: "message", text: "m" + i }).then((ok) => results.push(ok));
  const ws = FakeWebSocket.last();
  const times = [];
  const send = ws.send.bind(ws);
  ws.send = (data) => {
    times.push(Date.now());
    send(data);
  };
  tick(5000); // offline for a while: the bucket is full, not overfull
  assert.equal(ws.sent.length, 0);
  ws.open();
  const burst = ws.sent.length;
  assert.ok(burst >= 10 && burst < 20, `first burst ${burst}`);
  for (let i = 0; i < 100 && ws.sent.length < 60; i++) tick(50);
  assert.equal(ws.sent.length, 60);
  assert.deepEqual(
    ws.sent.map((f) => f.text),
    Array.from({ length: 60 }, (_, i) => "m" + i),
  );
  assert.equal(refusedBy(times, 10, 20), 0, "the server's limiter would refuse some");
  const secs = (times.at(-1) - times[0]) / 1000;
  assert.ok(secs > 3 && secs < 6, `60 frames took ${secs} s; want about (60-18)/9`);
  await settle();
  assert.equal(results.length, 60);
  assert.ok(results.every((ok) => ok === true));
});

test("outbox: a rate_limited error empties the bucket; errors near the budget pause sending", async (t) => {
  const { make, tick } = setup(t, () => 0);
  const c = make("/ws/x/", { transports: ["websocket"], rate: { perSecond: 10, burst: 20 } });
  await settle();
  const ws = FakeWebSocket.last();
  ws.open();
  ws.receive({ type: "error", code: "rate_limited", text: "slow down" });
  c.send({ type: "message", text: "a" });
  assert.equal(ws.sent.length, 0, "sent at once after rate_limited");
  tick(120);
  assert.equal(ws.sent.length, 1);

  // 15 errors (3/4 of 20) in the window: nothing more until they age out.
  for (let i = 0; i < 14; i++) ws.receive({ type: "reply", ref: "x", status: "error", code: "bad_text" });
  tick(5000);
  c.send({ type: "message", text: "b" });
  assert.equal(ws.sent.length, 1, "sent with 15 errors in 10 s");
  tick(4000);
  assert.equal(ws.sent.length, 1);
  tick(2000);
  assert.equal(ws.sent.length, 2, "not sent once the errors aged out");
});

test("request: reply by ref, error reply, timeout, lost connection, close", async (t) => {
  const { make, tick } = setup(t, () => 0);
  const c = make("/ws/x/", { transports: ["websocket"], requestTimeout: 3000 });
  const ev = record(c);
  await settle();
  const ws = FakeWebSocket.last();
  ws.open();

  const ok = c.request({ type: "join", room: "a" });
  const bad = c.request({ type: "join", room: "" });
  assert.equal(ws.sent.length, 2);
  const [r1, r2] = ws.sent;
  assert.equal(r1.type, "join");
  assert.notEqual(r1.ref, r2.ref);
  ws.receive({ type: "reply", ref: r2.ref, status: "error", code: "invalid", text: "no room" });
  ws.receive({ type: "reply", ref: r1.ref, status: "ok", data: { members: 3 } });
  assert.deepEqual(await ok, { members: 3 });
  await assert.rejects(bad, (err) => err instanceof RequestError && err.code === "invalid" && err.text === "no room");
  ws.receive({ type: "reply", ref: 999, status: "ok", data: {} });
  assert.deepEqual(
    ev.frames.map((f) => f.ref),
    [999],
    "only a reply nobody waits for is a frame",
  );

  const slow = c.request({ type: "slow" }, { timeout: 500 });
  tick(499);
  let done = false;
  slow.catch(() => {}).finally(() => (done = true));
  await settle();
  assert.equal(done, false);
  tick(1);
  await assert.rejects(slow, (err) => err.code === "timeout");

  const lost = c.request({ type: "x" });
  ws.serverClose(1011);
  await assert.rejects(lost, (err) => err.code === "disconnected");

  // Queued while offline: it waits for the connection, within its timeout.
  const queued = c.request({ type: "q" }, { timeout: 10000 });
  tick(0);
  const ws2 = FakeWebSocket.last();
  assert.notEqual(ws2, ws);
  ws2.open();
  const q = ws2.sent.find((f) => f.type === "q");
  ws2.receive({ type: "reply", ref: q.ref, status: "ok", data: "fine" });
  assert.equal(await queued, "fine");

  // A request that times out in the outbox is never sent.
  ws2.serverClose(1011);
  const never = c.request({ type: "never" }, { timeout: 100 });
  tick(100);
  await assert.rejects(never, (err) => err.code === "timeout");
  tick(10000);
  FakeWebSocket.last().open();
  assert.ok(!FakeWebSocket.last().sent.some((f) => f.type === "never"));

  const open = c.request({ type: "pending" });
  c.close();
  await assert.rejects(open, (err) => err.code === "closed");
});

test("ping: an idle connection pings; no answer within the timeout drops and reconnects", async (t) => {
  const { make, tick } = setup(t, () => 0);
  const c = make("/ws/x/", { transports: ["websocket"], pingInterval: 1000, pingTimeout: 500 });
  const ev = record(c);
  await settle();
  const ws = FakeWebSocket.last();
  ws.open();
  // Traffic keeps it from pinging.
  for (let i = 0; i < 5; i++) {
    tick(600);
    ws.receive({ type: "message", id: "m" + i });
  }
  assert.equal(ws.sent.filter((f) => f.type === "ping").length, 0);
  tick(1000);
  assert.deepEqual(ws.sent, [{ type: "ping" }]);
  tick(400);
  ws.receive({ type: "pong" });
  assert.equal(ev.frames.filter((f) => f.type === "pong").length, 0, "pongs are the client's own");
  tick(1000);
  assert.equal(ws.sent.length, 2, "the next idle second pings again");
  tick(499);
  assert.equal(c.state, "open");
  tick(1);
  assert.equal(c.state, "reconnecting", "no pong: dropped");
  assert.equal(ev.closes.at(-1).code, 1006);
  assert.equal(ev.closes.at(-1).reconnect, true);
  assert.ok(ws.closedWith, "the dead socket was closed");
  tick(0);
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(new URL(FakeWebSocket.last().url).searchParams.get("since"), "m4");
  // The dead socket's late events no longer count.
  ws.receive({ type: "message", id: "zombie" });
  assert.equal(c.lastId, "m4");
});

test("an attempt that does not open in time counts as failed", async (t) => {
  const { make, tick } = setup(t, () => 0);
  const c = make("/ws/x/", { transports: ["websocket", "sse"], openTimeout: 2000 });
  await settle();
  tick(2000);
  assert.equal(FakeWebSocket.instances[0].closedWith !== null, true);
  tick(0);
  tick(2000);
  tick(0);
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(FakeEventSource.instances.length, 1, "two hung upgrades: SSE next");
  assert.equal(c.transport, "sse");
});

test("SSE fallback: two upgrades that never open switch to SSE, which is kept", async (t) => {
  const { make, tick, net } = setup(t, () => 0);
  const c = make("http://h/ws/chat/r/", { since: "5-0" });
  const ev = record(c);
  await settle();
  FakeWebSocket.last().fail();
  tick(0);
  assert.equal(FakeWebSocket.instances.length, 2, "one failure is not enough");
  FakeWebSocket.last().fail();
  tick(0);
  assert.equal(FakeWebSocket.instances.length, 2);
  assert.equal(FakeEventSource.instances.length, 1);
  const es = FakeEventSource.last();
  const u = new URL(es.url);
  assert.equal(u.origin + u.pathname, "http://h/ws/chat/r/");
  assert.equal(u.searchParams.get("transport"), "sse");
  assert.equal(u.searchParams.get("since"), "5-0");
  es.open("stream-1");
  assert.equal(c.state, "open");
  assert.equal(c.transport, "sse");
  es.receive({ type: "message", id: "6-0", text: "hi" });
  assert.equal(ev.frames.at(-1).text, "hi");

  // A lost stream: the client reconnects over SSE again, with since.
  es.error();
  assert.ok(es.closed, "the client closes the EventSource itself (it would retry with the old since)");
  assert.equal(c.state, "reconnecting");
  tick(0);
  assert.equal(FakeEventSource.instances.length, 2);
  assert.equal(FakeWebSocket.instances.length, 2, "SSE is kept once it opened");
  assert.equal(new URL(FakeEventSource.last().url).searchParams.get("since"), "6-0");
  FakeEventSource.last().open("stream-2");

  // The server's close event closes with its code.
  FakeEventSource.last().serverClose(1008, "too many errors");
  assert.equal(c.state, "offline");
  assert.deepEqual(ev.closes.at(-1), { code: 1008, reason: "too many errors", opened: true, reconnect: false });
  assert.equal(net.calls.length, 0);
});

test("no fallback once a websocket has opened", async (t) => {
  const { make, tick } = setup(t, () => 0);
  make("/ws/x/");
  await settle();
  FakeWebSocket.last().open();
  FakeWebSocket.last().serverClose(1006);
  for (let i = 0; i < 4; i++) {
    tick(20000);
    FakeWebSocket.last().fail();
  }
  tick(20000);
  assert.equal(FakeEventSource.instances.length, 0);
  assert.equal(FakeWebSocket.instances.length, 6);
});

test("SSE: POSTs one at a time, numbered by seq; retries keep their seq; close by POST", async (t) => {
  const { make, tick, net } = setup(t, () => 0);
  const c = make("http://h/ws/x/", { transports: ["sse"], rate: null });
  await settle();
  const es = FakeEventSource.last();
  c.send({ type: "message", text: "offline" });
  es.open("s1");
  assert.equal(net.calls.length, 1);
  let p = net.calls[0];
  assert.equal(p.init.method, "POST");
  assert.equal(p.init.headers["Content-Type"], "application/json");
  assert.equal(p.url.searchParams.get("transport"), "sse");
  assert.equal(p.url.searchParams.get("stream"), "s1");
  assert.equal(p.url.searchParams.get("since"), null);
  assert.deepEqual(p.body, { seq: 1, frames: [{ type: "message", text: "offline" }] });

  const sent = [c.send({ type: "message", text: "a" }), c.send({ type: "message", text: "b" })];
  await settle();
  assert.equal(net.calls.length, 1, "a second POST before the first was answered");
  p.respond(204);
  await settle();
  assert.equal(net.calls.length, 2);
  p = net.calls[1];
  assert.deepEqual(p.body, { seq: 2, frames: [{ type: "message", text: "a" }, { type: "message", text: "b" }] });

  // 503: the same body again after a wait; then 204.
  p.respond(503);
  await settle();
  assert.equal(net.calls.length, 2);
  tick(1000);
  await settle();
  assert.equal(net.calls.length, 3);
  assert.deepEqual(net.calls[2].body, p.body, "a retry keeps its seq and frames");
  net.calls[2].fail(); // the network: retried too
  await settle();
  tick(2000);
  await settle();
  assert.equal(net.calls.length, 4);
  assert.deepEqual(net.calls[3].body, p.body);
  net.calls[3].respond(204);
  await settle();
  assert.deepEqual(await Promise.all(sent), [true, true]);

  // A request over SSE: its reply comes on the stream.
  const r = c.request({ type: "join" });
  await settle();
  const rp = net.calls[4];
  assert.equal(rp.body.seq, 3);
  rp.respond(204);
  es.receive({ type: "reply", ref: rp.body.frames[0].ref, status: "ok", data: 1 });
  assert.equal(await r, 1);

  // 404: the stream is gone; the frame waits for the next stream, seq from 1.
  c.send({ type: "message", text: "c" });
  await settle();
  net.calls[5].respond(404);
  await settle();
  assert.equal(c.state, "reconnecting");
  assert.ok(es.closed);
  tick(0);
  const es2 = FakeEventSource.last();
  assert.notEqual(es2, es);
  es2.open("s2");
  await settle();
  assert.equal(net.calls[6].url.searchParams.get("stream"), "s2");
  assert.deepEqual(net.calls[6].body, { seq: 1, frames: [{ type: "message", text: "c" }] });
  net.calls[6].respond(204);
  await settle();

  // 400: the frame is dropped and the seq is not spent.
  const dropped = c.send({ type: "message", text: "bad" });
  await settle();
  net.calls[7].respond(400);
  assert.equal(await dropped, false);
  c.send({ type: "message", text: "good" });
  await settle();
  assert.equal(net.calls[8].body.seq, 2);
  net.calls[8].respond(204);
  await settle();

  // close: POST close=1000 on the stream, then offline.
  const closing = c.close(1000);
  await settle();
  const cp = net.calls[9];
  assert.equal(cp.url.searchParams.get("close"), "1000");
  assert.equal(cp.url.searchParams.get("stream"), "s2");
  assert.equal(cp.init.keepalive, true);
  assert.equal(c.state, "open", "offline before the close was answered");
  cp.respond(204);
  await closing;
  assert.equal(c.state, "offline");
  assert.ok(es2.closed);
});

test("SSE: a POST unanswered when its stream is lost goes first on the next stream", async (t) => {
  const { make, tick, net } = setup(t, () => 0);
  const c = make("http://h/ws/x/", { transports: ["sse"], rate: null });
  await settle();
  const es = FakeEventSource.last();
  es.open("s1");
  const a = c.send({ type: "message", text: "a" });
  await settle();
  assert.deepEqual(net.calls[0].body, { seq: 1, frames: [{ type: "message", text: "a" }] });

  // The stream's node dies with the POST under way; "b" is typed after.
  es.error();
  assert.equal(c.state, "reconnecting");
  const b = c.send({ type: "message", text: "b" });
  tick(0);
  const es2 = FakeEventSource.last();
  assert.notEqual(es2, es);
  es2.open("s2");
  await settle();
  assert.equal(net.calls.length, 2);
  assert.equal(net.calls[1].url.searchParams.get("stream"), "s2");
  assert.deepEqual(net.calls[1].body, { seq: 1, frames: [{ type: "message", text: "a" }, { type: "message", text: "b" }] }, "a before b");

  // The lost POST's late answer changes nothing: no retry on the old
  // stream, no second resolution.
  net.calls[0].respond(502);
  await settle();
  tick(20000);
  await settle();
  assert.equal(net.calls.length, 2);
  net.calls[1].respond(204);
  assert.deepEqual(await Promise.all([a, b]), [true, true]);
});

test("SSE: pings go by POST and any frame on the stream answers them", async (t) => {
  const { make, tick, net } = setup(t, () => 0);
  const c = make("http://h/ws/x/", { transports: ["sse"], pingInterval: 1000, pingTimeout: 500 });
  await settle();
  FakeEventSource.last().open("s");
  tick(1000);
  await settle();
  assert.deepEqual(net.calls[0].body, { seq: 1, frames: [{ type: "ping" }] });
  net.calls[0].respond(204);
  FakeEventSource.last().receive({ type: "pong" });
  tick(499);
  assert.equal(c.state, "open");
  tick(1001);
  await settle();
  assert.equal(net.calls[1].body.seq, 2);
  tick(500);
  assert.equal(c.state, "reconnecting");
});

test("the page coming back online or visible reconnects at once", async (t) => {
  const target = new EventTarget();
  const doc = new EventTarget();
  doc.visibilityState = "visible";
  globalThis.addEventListener = target.addEventListener.bind(target);
  globalThis.removeEventListener = target.removeEventListener.bind(target);
  globalThis.document = doc;
  t.after(() => {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
    delete globalThis.document;
  });
  const { make, tick } = setup(t, () => 0.99);
  const c = make("/ws/x/", { transports: ["websocket"], pingInterval: 1000, pingTimeout: 500 });
  await settle();
  FakeWebSocket.last().open();
  FakeWebSocket.last().serverClose(1006);
  tick(0);
  assert.equal(FakeWebSocket.instances.length, 1, "waiting for the backoff");
  target.dispatchEvent(new Event("online"));
  assert.equal(FakeWebSocket.instances.length, 2, "online: at once");
  FakeWebSocket.last().fail();
  doc.dispatchEvent(new Event("visibilitychange"));
  assert.equal(FakeWebSocket.instances.length, 3, "visible: at once");
  FakeWebSocket.last().open();
  // Visible while open: a ping checks the connection now, unless it just
  // spoke.
  doc.dispatchEvent(new Event("visibilitychange"));
  assert.deepEqual(FakeWebSocket.last().sent, []);
  tick(600);
  doc.dispatchEvent(new Event("visibilitychange"));
  assert.deepEqual(FakeWebSocket.last().sent, [{ type: "ping" }]);
  await c.close();
  target.dispatchEvent(new Event("online"));
  tick(60000);
  assert.equal(FakeWebSocket.instances.length, 3, "closed: online does nothing");
});
