import { describe, expect, it } from "vitest";
import { type AccountState, type ExecutionReport, MAX_FILLS, applyEvent, fromSnapshot } from "./account";

const empty: AccountState = { symbol: "TATAINR", orders: [], balances: [], fills: [] };

const report = (over: Partial<ExecutionReport>): ExecutionReport => ({
  e: "executionReport",
  s: "TATAINR",
  S: "BUY",
  o: "LIMIT",
  p: "100.00",
  q: "7",
  z: "0.00000000",
  x: "NEW",
  X: "NEW",
  i: 1,
  l: "0.00000000",
  L: "0.00000000",
  n: "0",
  N: null,
  t: -1,
  T: 1000,
  O: 1000,
  m: false,
  Z: "0.00",
  ...over,
});

describe("applyEvent", () => {
  it("adds a new order, updates it on a partial fill and removes it when filled", () => {
    let s = applyEvent(empty, report({}));
    expect(s.orders).toEqual([
      { orderId: 1, symbol: "TATAINR", side: "BUY", type: "LIMIT", price: "100.00", origQty: "7", executedQty: "0.00000000", time: 1000 },
    ]);
    s = applyEvent(s, report({ x: "TRADE", X: "PARTIALLY_FILLED", z: "3", l: "3", L: "100.00", n: "0.3", N: "INR", t: 55, T: 2000, m: true }));
    expect(s.orders).toHaveLength(1);
    expect(s.orders[0].executedQty).toBe("3");
    expect(s.orders[0].time).toBe(1000);
    expect(s.fills).toEqual([
      { key: "55:1", symbol: "TATAINR", orderId: 1, side: "BUY", price: "100.00", qty: "3", fee: "0.3", feeAsset: "INR", time: 2000, maker: true },
    ]);
    s = applyEvent(s, report({ x: "TRADE", X: "FILLED", z: "7", l: "4", L: "100.00", t: 56, T: 3000 }));
    expect(s.orders).toEqual([]);
    expect(s.fills.map((f) => f.key)).toEqual(["56:1", "55:1"]);
  });

  it("removes canceled, expired and rejected orders; keeps newest first", () => {
    let s = applyEvent(empty, report({ i: 1, O: 1000 }));
    s = applyEvent(s, report({ i: 2, O: 2000 }));
    s = applyEvent(s, report({ i: 3, O: 3000 }));
    expect(s.orders.map((o) => o.orderId)).toEqual([3, 2, 1]);
    s = applyEvent(s, report({ i: 2, x: "CANCELED", X: "CANCELED" }));
    s = applyEvent(s, report({ i: 3, x: "EXPIRED", X: "EXPIRED" }));
    s = applyEvent(s, report({ i: 9, x: "REJECTED", X: "REJECTED" }));
    expect(s.orders.map((o) => o.orderId)).toEqual([1]);
  });

  it("shows orders of the selected market only, but fills of every market", () => {
    const s = applyEvent(
      applyEvent(empty, report({ s: "INFYINR", i: 4 })),
      report({ s: "INFYINR", i: 4, x: "TRADE", X: "FILLED", l: "1", L: "5.00", t: 9 }),
    );
    expect(s.orders).toEqual([]);
    expect(s.fills.map((f) => f.symbol)).toEqual(["INFYINR"]);
  });

  it("ignores a repeated fill and keeps the last MAX_FILLS", () => {
    let s = empty;
    for (let t = 0; t < MAX_FILLS + 5; t++) {
      const fill = report({ x: "TRADE", X: "PARTIALLY_FILLED", l: "1", t });
      s = applyEvent(applyEvent(s, fill), fill);
    }
    expect(s.fills).toHaveLength(MAX_FILLS);
    expect(s.fills[0].key).toBe(`${MAX_FILLS + 4}:1`);
  });

  it("updates balances from outboundAccountPosition, dropping zero ones", () => {
    const start = fromSnapshot(empty, "TATAINR", [], [
      { asset: "TATA", free: "1", locked: "0" },
      { asset: "INR", free: "1000", locked: "0" },
    ]);
    expect(start.balances.map((b) => b.asset)).toEqual(["INR", "TATA"]);
    const s = applyEvent(start, {
      e: "outboundAccountPosition",
      u: 1,
      B: [
        { a: "INR", f: "700.00", l: "300.00" },
        { a: "TATA", f: "0.00000000", l: "0.00000000" },
        { a: "INFY", f: "2", l: "0" },
      ],
    });
    expect(s.balances).toEqual([
      { asset: "INFY", free: "2", locked: "0" },
      { asset: "INR", free: "700.00", locked: "300.00" },
    ]);
    expect(applyEvent(s, { e: "balanceUpdate", a: "INR", d: "5" })).toBe(s);
  });

  it("a snapshot replaces orders and balances but keeps fills", () => {
    const s = applyEvent(empty, report({ x: "TRADE", X: "FILLED", l: "1", t: 1 }));
    const next = fromSnapshot(s, "INFYINR", [
      { orderId: 5, symbol: "INFYINR", side: "SELL", type: "LIMIT", price: "1", origQty: "1", executedQty: "0", time: 1 },
      { orderId: 6, symbol: "TATAINR", side: "SELL", type: "LIMIT", price: "1", origQty: "1", executedQty: "0", time: 2 },
    ], []);
    expect(next.symbol).toBe("INFYINR");
    expect(next.orders.map((o) => o.orderId)).toEqual([5]);
    expect(next.fills).toBe(s.fills);
  });
});
