/**
 * One combined WebSocket (`/stream?streams=a/b/c`) that reconnects by itself with backoff.
 * Every (re)connection calls `onOpen`, so the caller can resync what depends on continuity.
 */

export type ConnState = "connecting" | "live" | "reconnecting";

export interface StreamHandlers {
  onMessage(stream: string, data: unknown): void;
  onOpen(): void;
  onState(state: ConnState): void;
}

export class Stream {
  private ws: WebSocket | undefined;
  private closed = false;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(
    private readonly streams: string[],
    private readonly handlers: StreamHandlers,
  ) {
    this.connect();
  }

  private connect(): void {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/stream?streams=${this.streams.join("/")}`);
    this.ws = ws;
    this.handlers.onState(this.attempt === 0 ? "connecting" : "reconnecting");
    ws.onopen = () => {
      this.attempt = 0;
      this.handlers.onState("live");
      this.handlers.onOpen();
    };
    ws.onmessage = (event) => {
      const msg = JSON.parse(String(event.data)) as { stream?: string; data?: unknown };
      if (msg.stream !== undefined) this.handlers.onMessage(msg.stream, msg.data);
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.closed) return;
      this.attempt += 1;
      this.handlers.onState("reconnecting");
      const delay = Math.min(5000, 250 * 2 ** Math.min(this.attempt, 5));
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    this.ws?.close();
  }
}

/** What a user data stream needs from the REST API: a listen key, and keeping it alive. */
export interface ListenKeyApi {
  create(): Promise<string>;
  keepAlive(listenKey: string): Promise<void>;
}

export interface UserStreamHandlers {
  onMessage(data: { e: string }): void;
  /** Every (re)connection: the caller re-fetches the state the events change. */
  onOpen(): void;
}

export const KEEP_ALIVE_MS = 30 * 60 * 1000;

/**
 * The private stream `/ws/<listenKey>`: gets a key first, keeps it alive, and on a lost
 * connection, `listenKeyExpired` or a refused keep-alive starts again with a fresh key.
 */
export class UserStream {
  private ws: WebSocket | undefined;
  private closed = false;
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private keepAlive: ReturnType<typeof setInterval> | undefined;
  /** The listen key in use (undefined before the first one arrives). */
  listenKey: string | undefined;

  constructor(
    private readonly api: ListenKeyApi,
    private readonly handlers: UserStreamHandlers,
  ) {
    void this.connect();
  }

  private async connect(): Promise<void> {
    let key: string;
    try {
      key = await this.api.create();
    } catch (error) {
      console.warn("investo: no listen key:", error);
      this.retry();
      return;
    }
    if (this.closed) return;
    this.listenKey = key;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/ws/${encodeURIComponent(key)}`);
    this.ws = ws;
    ws.onopen = () => {
      this.attempt = 0;
      this.handlers.onOpen();
    };
    ws.onmessage = (event) => {
      if (this.ws !== ws) return;
      const msg = JSON.parse(String(event.data)) as { e?: string };
      if (msg.e === "listenKeyExpired") this.restart();
      else if (typeof msg.e === "string") this.handlers.onMessage(msg as { e: string });
    };
    ws.onclose = () => {
      if (this.ws === ws && !this.closed) this.restart();
    };
    clearInterval(this.keepAlive);
    this.keepAlive = setInterval(() => {
      this.api.keepAlive(key).catch(() => {
        if (this.ws === ws) this.restart();
      });
    }, KEEP_ALIVE_MS);
  }

  private restart(): void {
    const ws = this.ws;
    this.ws = undefined;
    clearInterval(this.keepAlive);
    ws?.close();
    this.retry();
  }

  private retry(): void {
    if (this.closed) return;
    this.attempt += 1;
    const delay = Math.min(5000, 250 * 2 ** Math.min(this.attempt, 5));
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.timer);
    clearInterval(this.keepAlive);
    const ws = this.ws;
    this.ws = undefined;
    ws?.close();
  }
}
