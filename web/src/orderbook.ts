/**
 * A local order book kept in sync from a REST snapshot plus `<symbol>@depth` diffs,
 * following Binance's procedure exactly:
 *
 * 1. open the stream and buffer every diff;
 * 2. fetch `/api/v3/depth`; if the snapshot is older than the first buffered diff
 *    (lastUpdateId + 1 < U: diffs in between were never seen), fetch it again;
 * 3. drop buffered diffs with u <= lastUpdateId;
 * 4. the first diff applied must straddle the snapshot: U <= lastUpdateId + 1 <= u;
 * 5. every later diff must continue the previous one: U == previous u + 1;
 *    otherwise there is a gap: throw the book away and start again at 2;
 * 6. quantities are absolute: 0 removes the level.
 *
 * Pure: no I/O, no timers. The caller feeds it diffs and snapshots and acts on what it answers.
 */

export type Level = [price: string, qty: string];

export interface DepthDiff {
  U: number; // first update id in the event
  u: number; // last update id in the event
  b: Level[];
  a: Level[];
}

export interface DepthSnapshot {
  lastUpdateId: number;
  bids: Level[];
  asks: Level[];
}

export type SyncState = "buffering" | "synced";

/** What happened to a diff or a snapshot; "resync" and "refetch" mean: fetch a new snapshot. */
export type SyncResult = "buffered" | "applied" | "ignored" | "resync" | "refetch";

export interface BookRow {
  price: string;
  qty: string;
  priceNum: number;
  qtyNum: number;
  cumulative: number;
}

export class BookSync {
  state: SyncState = "buffering";
  lastUpdateId = 0;
  readonly bids = new Map<string, string>();
  readonly asks = new Map<string, string>();
  private buffer: DepthDiff[] = [];
  private first = true; // next applied diff must straddle the snapshot
  resyncs = 0;

  /** Forget everything and buffer again (on a gap, a new connection or a new market). */
  reset(): void {
    this.state = "buffering";
    this.lastUpdateId = 0;
    this.bids.clear();
    this.asks.clear();
    this.buffer = [];
    this.first = true;
  }

  /** Diffs waiting for a snapshot (for tests and diagnostics). */
  get buffered(): readonly DepthDiff[] {
    return this.buffer;
  }

  onDiff(diff: DepthDiff): SyncResult {
    if (this.state === "buffering") {
      this.buffer.push(diff);
      return "buffered";
    }
    return this.applyLive(diff);
  }

  onSnapshot(snapshot: DepthSnapshot): SyncResult {
    const first = this.buffer[0];
    if (first !== undefined && snapshot.lastUpdateId + 1 < first.U) {
      return "refetch"; // the snapshot is older than what we buffered: a hole in between
    }
    this.bids.clear();
    this.asks.clear();
    for (const [p, q] of snapshot.bids) setLevel(this.bids, p, q);
    for (const [p, q] of snapshot.asks) setLevel(this.asks, p, q);
    this.lastUpdateId = snapshot.lastUpdateId;
    this.state = "synced";
    this.first = true;
    const pending = this.buffer;
    this.buffer = [];
    for (const diff of pending) {
      const result = this.applyLive(diff);
      if (result === "resync") return result;
    }
    return "applied";
  }

  private applyLive(diff: DepthDiff): SyncResult {
    if (diff.u <= this.lastUpdateId) return "ignored";
    const ok = this.first
      ? diff.U <= this.lastUpdateId + 1 && this.lastUpdateId + 1 <= diff.u
      : diff.U === this.lastUpdateId + 1;
    if (!ok) {
      this.reset();
      this.resyncs += 1;
      return "resync";
    }
    this.first = false;
    for (const [p, q] of diff.b) setLevel(this.bids, p, q);
    for (const [p, q] of diff.a) setLevel(this.asks, p, q);
    this.lastUpdateId = diff.u;
    return "applied";
  }

  /** The best `depth` levels of each side, best first, with cumulative quantities. */
  levels(depth: number): { bids: BookRow[]; asks: BookRow[] } {
    return { bids: rows(this.bids, depth, true), asks: rows(this.asks, depth, false) };
  }

  bestBid(): number | undefined {
    return best(this.bids, true);
  }

  bestAsk(): number | undefined {
    return best(this.asks, false);
  }

  /** Crossed books cannot come from a correct feed: a sign of a bug or a missed diff. */
  crossed(): boolean {
    const bid = this.bestBid();
    const ask = this.bestAsk();
    return bid !== undefined && ask !== undefined && bid >= ask;
  }
}

function setLevel(side: Map<string, string>, price: string, qty: string): void {
  const key = canonical(price);
  if (Number(qty) === 0) side.delete(key);
  else side.set(key, qty);
}

/** "950.20000000" and "950.2" are the same level. */
export function canonical(price: string): string {
  if (!price.includes(".")) return price;
  const trimmed = price.replace(/0+$/, "");
  return trimmed.endsWith(".") ? trimmed.slice(0, -1) : trimmed;
}

function best(side: Map<string, string>, descending: boolean): number | undefined {
  let result: number | undefined;
  for (const key of side.keys()) {
    const p = Number(key);
    if (result === undefined || (descending ? p > result : p < result)) result = p;
  }
  return result;
}

function rows(side: Map<string, string>, depth: number, descending: boolean): BookRow[] {
  const sorted = [...side.entries()]
    .map(([price, qty]) => ({ price, qty, priceNum: Number(price), qtyNum: Number(qty), cumulative: 0 }))
    .sort((x, y) => (descending ? y.priceNum - x.priceNum : x.priceNum - y.priceNum))
    .slice(0, depth);
  let total = 0;
  for (const row of sorted) {
    total += row.qtyNum;
    row.cumulative = total;
  }
  return sorted;
}
