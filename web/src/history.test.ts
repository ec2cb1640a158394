import { describe, expect, it } from "vitest";
import type { ExecutionReport } from "./account";
import { type HistoryState, MAX_HISTORY, type OrderRow, applyToHistory, averagePrice, historyFromRows } from "./history";

const row = (over: Partial<OrderRow>): OrderRow => ({
  orderId: 1,
  symbol: "TATAINR",
  side: "BUY",
  type: "LIMIT",
  price: "100.00",
  origQty: "7",
  executedQty: "0",
  cummulativeQuoteQty: "0.00",
  status: "CANCELED",
  time: 1000,
  updateTime: 2000,
  ...over,
});

const report = (over: Partial<ExecutionReport>): ExecutionReport => ({
  e: "executionReport",
  s: "TATAINR",
  S: "SELL",
  o: "LIMIT",
  p: "101.00",
  q: "5",
  z: "0",
  x: "NEW",
  X: "NEW",
  i: 10,
  l: "0",
  L: "0",
  n: "0",
  N: null,
  t: -1,
  T: 5000,
  O: 4000,
  m: false,
  Z: "0.00",
  ...over,
});

describe("order history", () => {
  it("keeps finished orders of the market from allOrders, last finished first", () => {
    const s = historyFromRows("TATAINR", [
      row({ orderId: 1, status: "FILLED", executedQty: "7", cummulativeQuoteQty: "700.00", updateTime: 3000 }),
      row({ orderId: 2, status: "NEW" }),
      row({ orderId: 3, status: "PARTIALLY_FILLED" }),
      row({ orderId: 4, status: "CANCELED", updateTime: 9000 }),
      row({ orderId: 5, status: "EXPIRED", updateTime: 3000 }),
      row({ orderId: 6, symbol: "ZOMATOINR", status: "FILLED" }),
    ]);
    expect(s.symbol).toBe("TATAINR");
    expect(s.orders.map((o) => [o.orderId, o.status])).toEqual([
      [4, "CANCELED"],
      [5, "EXPIRED"],
      [1, "FILLED"],
    ]);
    expect(s.orders[2].quoteQty).toBe("700.00");
  });

  it("puts an order that leaves the open orders on top, once", () => {
    let s: HistoryState = historyFromRows("TATAINR", [row({ orderId: 1, updateTime: 2000 })]);
    const open = applyToHistory(s, report({}));
    expect(open).toBe(s); // still open: not history
    expect(applyToHistory(s, report({ x: "TRADE", X: "PARTIALLY_FILLED", z: "2" }))).toBe(s);
    const canceled = report({ x: "CANCELED", X: "CANCELED", z: "2", Z: "202.00", T: 6000 });
    s = applyToHistory(s, canceled);
    expect(s.orders.map((o) => o.orderId)).toEqual([10, 1]);
    expect(s.orders[0]).toEqual({
      orderId: 10,
      symbol: "TATAINR",
      side: "SELL",
      type: "LIMIT",
      price: "101.00",
      origQty: "5",
      executedQty: "2",
      quoteQty: "202.00",
      status: "CANCELED",
      time: 4000,
      updateTime: 6000,
    });
    expect(applyToHistory(s, canceled).orders.map((o) => o.orderId)).toEqual([10, 1]); // replayed: no duplicate
  });

  it("records filled, expired and rejected orders; ignores other markets; keeps MAX_HISTORY", () => {
    let s: HistoryState = { symbol: "TATAINR", orders: [] };
    s = applyToHistory(s, report({ i: 1, x: "TRADE", X: "FILLED", z: "5", T: 1 }));
    s = applyToHistory(s, report({ i: 2, x: "EXPIRED", X: "EXPIRED", T: 2 }));
    s = applyToHistory(s, report({ i: 3, x: "REJECTED", X: "REJECTED", T: 3 }));
    expect(applyToHistory(s, report({ i: 4, s: "ZOMATOINR", x: "CANCELED", X: "CANCELED" }))).toBe(s);
    expect(s.orders.map((o) => o.status)).toEqual(["REJECTED", "EXPIRED", "FILLED"]);
    for (let i = 100; i < 100 + MAX_HISTORY; i++) s = applyToHistory(s, report({ i, x: "CANCELED", X: "CANCELED", T: i }));
    expect(s.orders).toHaveLength(MAX_HISTORY);
    expect(s.orders[0].orderId).toBe(100 + MAX_HISTORY - 1);
  });

  it("averages the fill price", () => {
    const [filled] = historyFromRows("TATAINR", [row({ status: "FILLED", executedQty: "4", cummulativeQuoteQty: "402.00" })]).orders;
    expect(averagePrice(filled)).toBeCloseTo(100.5);
    expect(averagePrice(historyFromRows("TATAINR", [row({})]).orders[0])).toBeUndefined();
  });
});
