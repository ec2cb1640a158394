import { describe, expect, it } from "vitest";
import { BookSync, type DepthDiff, type DepthSnapshot } from "./orderbook";

const snap = (id: number, bids: [string, string][] = [["100.0", "5"]], asks: [string, string][] = [["101.0", "3"]]): DepthSnapshot => ({
  lastUpdateId: id,
  bids,
  asks,
});
const diff = (U: number, u: number, b: [string, string][] = [], a: [string, string][] = []): DepthDiff => ({ U, u, b, a });

describe("BookSync (Binance snapshot + diff procedure)", () => {
  it("buffers diffs until the snapshot arrives", () => {
    const book = new BookSync();
    expect(book.onDiff(diff(5, 6))).toBe("buffered");
    expect(book.state).toBe("buffering");
    expect(book.buffered).toHaveLength(1);
  });

  it("drops buffered diffs with u <= lastUpdateId and applies the straddling one", () => {
    const book = new BookSync();
    book.onDiff(diff(1, 3, [["99", "1"]]));
    book.onDiff(diff(4, 10, [["100.0", "7"]]));
    book.onDiff(diff(11, 12, [], [["101.00000000", "0"]]));
    expect(book.onSnapshot(snap(8))).toBe("applied");
    expect(book.state).toBe("synced");
    expect(book.lastUpdateId).toBe(12);
    expect(book.bids.get("99")).toBeUndefined(); // u=3 <= 8: dropped
    expect(book.bids.get("100")).toBe("7");
    expect(book.asks.size).toBe(0); // qty 0 removes, "101.00000000" == "101.0"
  });

  it("refetches a snapshot older than the first buffered diff", () => {
    const book = new BookSync();
    book.onDiff(diff(20, 25));
    expect(book.onSnapshot(snap(10))).toBe("refetch");
    expect(book.state).toBe("buffering");
    expect(book.buffered).toHaveLength(1); // kept for the next snapshot
    expect(book.onSnapshot(snap(22))).toBe("applied");
    expect(book.lastUpdateId).toBe(25);
  });

  it("accepts a snapshot exactly one before the first buffered diff", () => {
    const book = new BookSync();
    book.onDiff(diff(11, 11, [["100", "2"]]));
    expect(book.onSnapshot(snap(10))).toBe("applied");
    expect(book.bids.get("100")).toBe("2");
  });

  it("requires the first live diff after an empty buffer to straddle", () => {
    const book = new BookSync();
    expect(book.onSnapshot(snap(10))).toBe("applied");
    expect(book.onDiff(diff(5, 10))).toBe("ignored"); // already in the snapshot
    expect(book.onDiff(diff(13, 14))).toBe("resync"); // 11 and 12 missed
    expect(book.state).toBe("buffering");
    expect(book.bids.size).toBe(0);
    expect(book.resyncs).toBe(1);
  });

  it("detects a gap between live diffs and starts again", () => {
    const book = new BookSync();
    book.onSnapshot(snap(10));
    expect(book.onDiff(diff(9, 12, [["100", "1"]]))).toBe("applied");
    expect(book.onDiff(diff(13, 13, [["98", "1"]]))).toBe("applied");
    expect(book.onDiff(diff(15, 16))).toBe("resync");
    expect(book.onDiff(diff(17, 17))).toBe("buffered");
    expect(book.onSnapshot(snap(16))).toBe("applied");
    expect(book.lastUpdateId).toBe(17);
  });

  it("a gap inside the buffered diffs forces a resync", () => {
    const book = new BookSync();
    book.onDiff(diff(11, 12));
    book.onDiff(diff(14, 15));
    expect(book.onSnapshot(snap(10))).toBe("resync");
    expect(book.state).toBe("buffering");
  });

  it("levels are sorted best first with cumulative quantities", () => {
    const book = new BookSync();
    book.onSnapshot(
      snap(
        1,
        [["99.5", "2"], ["100", "1"], ["98", "4"]],
        [["102", "5"], ["101", "3"]],
      ),
    );
    const { bids, asks } = book.levels(2);
    expect(bids.map((r) => [r.price, r.cumulative])).toEqual([["100", 1], ["99.5", 3]]);
    expect(asks.map((r) => [r.price, r.cumulative])).toEqual([["101", 3], ["102", 8]]);
    expect(book.bestBid()).toBe(100);
    expect(book.bestAsk()).toBe(101);
    expect(book.crossed()).toBe(false);
  });

  it("replaying a random feed with random snapshot timing always matches the source book", () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 50; trial++) {
      const truth = new Map<string, string>();
      const history: { diff: DepthDiff; after: Map<string, string> }[] = [];
      let id = 0;
      for (let i = 0; i < 40; i++) {
        const changes: [string, string][] = [];
        for (let k = 0; k < 1 + Math.floor(rand() * 3); k++) {
          const price = String(90 + Math.floor(rand() * 10));
          const qty = rand() < 0.3 ? "0" : String(1 + Math.floor(rand() * 9));
          changes.push([price, qty]);
          if (qty === "0") truth.delete(price);
          else truth.set(price, qty);
        }
        const span = 1 + Math.floor(rand() * 3);
        history.push({ diff: diff(id + 1, id + span, changes), after: new Map(truth) });
        id += span;
      }
      const book = new BookSync();
      const snapAt = Math.floor(rand() * 30); // the snapshot reflects diffs [0, snapAt)
      const delivered = Math.floor(rand() * snapAt); // diffs delivered before the snapshot arrives
      for (let i = delivered; i < snapAt; i++) book.onDiff(history[i].diff);
      const snapshotBook = snapAt === 0 ? new Map<string, string>() : history[snapAt - 1].after;
      const lastId = snapAt === 0 ? 0 : history[snapAt - 1].diff.u;
      expect(book.onSnapshot({ lastUpdateId: lastId, bids: [...snapshotBook.entries()], asks: [] })).toBe("applied");
      for (let i = snapAt; i < history.length; i++) {
        expect(book.onDiff(history[i].diff)).toBe("applied");
      }
      expect(new Map([...book.bids.entries()])).toEqual(truth);
    }
  });
});
