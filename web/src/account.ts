/**
 * The signed-in user's open orders, balances and recent fills, and how the user data
 * stream's events change them. Pure functions: the state is never mutated.
 */

export interface OpenOrder {
  orderId: number;
  symbol: string;
  side: "BUY" | "SELL";
  type: string;
  price: string;
  origQty: string;
  executedQty: string;
  time: number;
}

export interface Balance {
  asset: string;
  free: string;
  locked: string;
}

export interface Fill {
  key: string; // tradeId:orderId (a self-trade fills two of our orders with one trade)
  symbol: string;
  orderId: number;
  side: "BUY" | "SELL";
  price: string;
  qty: string;
  fee: string;
  feeAsset: string;
  time: number;
  maker: boolean;
}

/** Binance's `executionReport` (the fields used here). */
export interface ExecutionReport {
  e: "executionReport";
  s: string; // symbol
  S: "BUY" | "SELL";
  o: string; // order type
  p: string; // price
  q: string; // quantity
  z: string; // cumulative filled
  x: string; // execution type: NEW, TRADE, CANCELED, EXPIRED, REJECTED …
  X: string; // order status
  i: number; // orderId
  l: string; // last filled qty
  L: string; // last filled price
  n: string; // fee of this fill
  N: string | null; // fee asset
  t: number; // tradeId
  T: number; // transaction time
  O: number; // order creation time
  m: boolean; // maker
  Z: string; // cumulative quote filled
}

export interface AccountPosition {
  e: "outboundAccountPosition";
  u: number;
  B: { a: string; f: string; l: string }[];
}

export type UserEvent =
  | ExecutionReport
  | AccountPosition
  | { e: "balanceUpdate"; a: string; d: string }
  | { e: "listenKeyExpired"; listenKey: string };

export interface AccountState {
  symbol: string; // open orders are shown for this market only
  orders: OpenOrder[]; // newest first
  balances: Balance[];
  fills: Fill[]; // newest first, all markets
}

export const MAX_FILLS = 20;

const LIVE = new Set(["NEW", "PARTIALLY_FILLED"]);

/** The order an `executionReport` describes, created at ``time``. */
export function orderFromReport(r: ExecutionReport, time: number): OpenOrder {
  return { orderId: r.i, symbol: r.s, side: r.S, type: r.o, price: r.p, origQty: r.q, executedQty: r.z, time };
}
const isZero = (s: string) => Number(s) === 0;

function applyReport(state: AccountState, r: ExecutionReport): AccountState {
  let { orders, fills } = state;
  if (r.s === state.symbol) {
    orders = orders.filter((o) => o.orderId !== r.i);
    if (LIVE.has(r.X)) {
      const prev = state.orders.find((o) => o.orderId === r.i);
      const order = orderFromReport(r, prev?.time ?? r.O);
      orders = [...orders, order].sort((a, b) => b.time - a.time || b.orderId - a.orderId);
    }
  }
  if (r.x === "TRADE") {
    const key = `${r.t}:${r.i}`;
    if (!fills.some((f) => f.key === key)) {
      const fill: Fill = {
        key,
        symbol: r.s,
        orderId: r.i,
        side: r.S,
        price: r.L,
        qty: r.l,
        fee: r.n,
        feeAsset: r.N ?? "",
        time: r.T,
        maker: r.m,
      };
      fills = [fill, ...fills].slice(0, MAX_FILLS);
    }
  }
  return orders === state.orders && fills === state.fills ? state : { ...state, orders, fills };
}

function applyPosition(state: AccountState, p: AccountPosition): AccountState {
  const byAsset = new Map(state.balances.map((b) => [b.asset, b]));
  for (const { a, f, l } of p.B) {
    if (isZero(f) && isZero(l)) byAsset.delete(a); // as `omitZeroBalances`
    else byAsset.set(a, { asset: a, free: f, locked: l });
  }
  const balances = [...byAsset.values()].sort((x, y) => x.asset.localeCompare(y.asset));
  return { ...state, balances };
}

/** The state after one user data stream event (events other than these two change nothing). */
export function applyEvent(state: AccountState, event: UserEvent): AccountState {
  if (event.e === "executionReport") return applyReport(state, event);
  if (event.e === "outboundAccountPosition") return applyPosition(state, event);
  return state;
}

/** The state from a REST snapshot (open orders of `symbol`, balances); fills are kept. */
export function fromSnapshot(state: AccountState, symbol: string, orders: OpenOrder[], balances: Balance[]): AccountState {
  return {
    symbol,
    orders: orders.filter((o) => o.symbol === symbol).sort((a, b) => b.time - a.time || b.orderId - a.orderId),
    balances: [...balances].sort((x, y) => x.asset.localeCompare(y.asset)),
    fills: state.fills,
  };
}
