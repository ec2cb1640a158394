/**
 * The signed-in user's finished orders in one market (order history): loaded from
 * `GET /api/v3/allOrders`, kept live from the user data stream's `executionReport`s.
 * Pure functions: the state is never mutated.
 */

import { orderFromReport } from "./account";
import type { ExecutionReport, OpenOrder } from "./account";

/** A finished order: an open order's fields (price "0.00000000" for a market order) and its end. */
export interface PastOrder extends OpenOrder {
  quoteQty: string; // cumulative quote filled: executedQty × average price
  status: string; // FILLED, CANCELED, EXPIRED, EXPIRED_IN_MATCH, REJECTED
  updateTime: number; // finished (time: created)
}

/** `GET /api/v3/allOrders`' rows (the fields used here). */
export interface OrderRow extends OpenOrder {
  cummulativeQuoteQty: string;
  status: string;
  updateTime: number;
}

export interface HistoryState {
  symbol: string;
  orders: PastOrder[]; // last finished first
}

export const MAX_HISTORY = 50;
export const FINISHED = new Set(["FILLED", "CANCELED", "EXPIRED", "EXPIRED_IN_MATCH", "REJECTED"]);

const newestFirst = (a: PastOrder, b: PastOrder) => b.updateTime - a.updateTime || b.orderId - a.orderId;

/** The history of `symbol` from `allOrders` (open orders in it are left out). */
export function historyFromRows(symbol: string, rows: OrderRow[]): HistoryState {
  const orders = rows
    .filter((r) => r.symbol === symbol && FINISHED.has(r.status))
    .map(
      (r): PastOrder => ({
        orderId: r.orderId,
        symbol: r.symbol,
        side: r.side,
        type: r.type,
        price: r.price,
        origQty: r.origQty,
        executedQty: r.executedQty,
        quoteQty: r.cummulativeQuoteQty,
        status: r.status,
        time: r.time,
        updateTime: r.updateTime,
      }),
    )
    .sort(newestFirst)
    .slice(0, MAX_HISTORY);
  return { symbol, orders };
}

/** The history after one `executionReport`: an order that just finished goes on top. */
export function applyToHistory(state: HistoryState, r: ExecutionReport): HistoryState {
  if (r.s !== state.symbol || !FINISHED.has(r.X)) return state;
  const order: PastOrder = { ...orderFromReport(r, r.O), quoteQty: r.Z, status: r.X, updateTime: r.T };
  const rest = state.orders.filter((o) => o.orderId !== r.i);
  return { ...state, orders: [order, ...rest].sort(newestFirst).slice(0, MAX_HISTORY) };
}

/** The average fill price (quote filled / quantity filled), or undefined before any fill. */
export function averagePrice(o: PastOrder): number | undefined {
  const filled = Number(o.executedQty);
  return filled > 0 ? Number(o.quoteQty) / filled : undefined;
}
