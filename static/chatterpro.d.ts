// Type declarations of chatterpro.js, the browser client of ChatterPro consumers.

/** The client's connection state. offline: closed for good, no reconnect. */
export type State = "connecting" | "open" | "reconnecting" | "offline";

/** A transport the client can use. */
export type Transport = "websocket" | "sse";

/** A frame: a JSON object with a string "type". */
export interface Frame {
  type: string;
  [key: string]: unknown;
}

/** What the "close" event reports, once per connection that ends. */
export interface CloseInfo {
  /** The close code: the server's (1000, 1008, 1012, ...), or 1006 when the connection was lost or dropped by the client. */
  code: number;
  reason: string;
  /** Whether this connection had opened. */
  opened: boolean;
  /** Whether the client will reconnect; false after close(), 1000 and 1008. */
  reconnect: boolean;
}

export interface ClientOptions {
  /** Message ID to resume from on the first connection. Defaults to none. */
  since?: string | null;
  /** Reconnect waits: full jitter under min * 2^attempt, capped at max (ms). Defaults to {min: 500, max: 10000}. */
  backoff?: { min?: number; max?: number };
  /** A connection that received nothing for this long (ms) sends {"type":"ping"}; 0 turns pings off. Defaults to 25000. */
  pingInterval?: number;
  /** How long (ms) a ping may wait for any frame before the connection is dropped and reopened. Defaults to 10000. */
  pingTimeout?: number;
  /** How long (ms) an attempt may take to open before it counts as failed. Defaults to 10000. */
  openTimeout?: number;
  /** Default timeout (ms) of request(). Defaults to 10000. */
  requestTimeout?: number;
  /** How long (ms) close() waits for the server before it gives up waiting. Defaults to 1000. */
  closeTimeout?: number;
  /** Transports in the order tried. Defaults to ["websocket", "sse"]. */
  transports?: Transport[];
  /** Attempts in a row that never opened before the next transport is tried (until one has opened). Defaults to 2. */
  fallbackAfter?: number;
  /** The server's rate limit; the client sends a tenth under it. null: no pacing. Defaults to {perSecond: 10, burst: 20}. */
  rate?: { perSecond: number; burst: number } | null;
  /** The server's error budget; the client stops sending at 3/4 of it until errors age out. Defaults to {count: 20, window: 10000}. */
  errorBudget?: { count?: number; window?: number };
  /** Says which message ID a frame carries for resuming, if any. Defaults to defaultResumeId. */
  resumeId?: (frame: Frame) => string | null | undefined;
  /** For tests and runtimes without them. Default to the global ones. */
  WebSocket?: unknown;
  EventSource?: unknown;
  fetch?: (input: string, init?: RequestInit) => Promise<Response>;
}

export interface RequestOptions {
  /** Milliseconds until the request rejects with code "timeout". Defaults to the client's requestTimeout. */
  timeout?: number;
}

/** The error of a request: the server's code ("rate_limited", ...), or "timeout", "disconnected", "closed". */
export class RequestError extends Error {
  constructor(code: string, text?: string);
  readonly code: string;
  /** The server's text, or "". */
  readonly text: string;
}

/** A client of one ChatterPro consumer route. It connects on its own, right after construction. */
export class Client {
  /** url: the route as a path ("/ws/chat/lobby/") or an absolute ws:, wss:, http: or https: URL. */
  constructor(url: string | URL, options?: ClientOptions);
  readonly state: State;
  /** The transport in use or being tried. */
  readonly transport: Transport;
  /** The last message ID seen, or null. */
  readonly lastId: string | null;

  on(type: "state", fn: (state: State) => void): () => void;
  on(type: "close", fn: (info: CloseInfo) => void): () => void;
  /** Every frame from the server except pongs and the replies of request(). */
  on(type: "frame", fn: (frame: Frame) => void): () => void;
  /** Frames of one type ("message", "error", ...). */
  on<F extends Frame = Frame>(type: string, fn: (frame: F) => void): () => void;
  off(type: string, fn: (arg: any) => void): void;

  /** Queues a frame; resolves true once handed to the connection, false if the client closed first. Never rejects. */
  send(frame: Frame): Promise<boolean>;
  /** Sends a frame with a fresh "ref"; resolves with the data of the ok reply, rejects with a RequestError. */
  request<T = unknown>(frame: Frame, options?: RequestOptions): Promise<T>;
  /** Closes for good with 1000 or 3000-4999; resolves once closed (or after closeTimeout). */
  close(code?: number, reason?: string): Promise<void>;
  /** Reconnects at once when waiting to reconnect. */
  reconnectNow(): void;
}

/** The reconnect wait for attempt (0 first): uniform in [0, min(max, min * 2^attempt)). */
export function backoffDelay(attempt: number, min: number, max: number, random?: () => number): number;

/** The default resumeId: the last message of a "history" frame, else a string "id"; none for "older". */
export function defaultResumeId(frame: Frame): string | undefined;
