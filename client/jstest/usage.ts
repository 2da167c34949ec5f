// Compiled with tsc --noEmit: the declarations in chatterpro.d.ts must
// accept what a page writes, and refuse what is wrong.
import { Client, RequestError, backoffDelay, defaultResumeId } from "../../static/chatterpro.js";
import type { CloseInfo, Frame, State } from "../../static/chatterpro.js";

interface ChatMessage extends Frame {
  type: "message";
  id: string;
  user: string;
  text: string;
}

const c = new Client("/ws/chat/lobby/", {
  since: null,
  backoff: { min: 250, max: 8000 },
  pingInterval: 20000,
  requestTimeout: 5000,
  transports: ["websocket", "sse"],
  rate: { perSecond: 10, burst: 20 },
  resumeId: (f) => (typeof f.id === "string" ? f.id : undefined),
});

const offState: () => void = c.on("state", (s: State) => {
  const open: boolean = s === "open";
  void open;
});
c.on("close", (info: CloseInfo) => {
  const n: number = info.code;
  const again: boolean = info.reconnect && info.opened;
  void n, again;
});
c.on("frame", (f) => {
  const t: string = f.type;
  void t;
});
c.on<ChatMessage>("message", (m) => {
  const text: string = m.text;
  void text;
});
offState();

async function use(): Promise<void> {
  const written: boolean = await c.send({ type: "message", text: "hi", cid: "abc" });
  const data = await c.request<{ members: number }>({ type: "join" }, { timeout: 1000 });
  const n: number = data.members;
  try {
    await c.request({ type: "x" });
  } catch (err) {
    if (err instanceof RequestError) {
      const code: string = err.code;
      const text: string = err.text;
      void code, text;
    }
  }
  c.reconnectNow();
  const last: string | null = c.lastId;
  const state: State = c.state;
  const tr: "websocket" | "sse" = c.transport;
  await c.close(1000, "leave");
  void written, n, last, state, tr;
}
void use;

const d: number = backoffDelay(3, 500, 10000, Math.random);
const id: string | undefined = defaultResumeId({ type: "history", messages: [] });
void d, id;

// @ts-expect-error a frame needs a type
c.send({ text: "no type" });
// @ts-expect-error states are a closed set
const bad: State = "closed";
// @ts-expect-error transports are a closed set
new Client("/ws/x/", { transports: ["longpoll"] });
void bad;
