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
