/**
 * Exact decimal checks for order entry (no floating point): a price must be a multiple of the
 * tick, a quantity of the lot step, within the filters of exchangeInfo.
 */

export interface Filters {
  tickSize: string;
  minPrice: string;
  maxPrice: string;
  stepSize: string;
  minQty: string;
  maxQty: string;
  minNotional: string;
}

const DECIMAL = /^\d+(\.\d+)?$/;

/** `text` as an integer count of 10^-scale units; undefined if it is not a plain decimal. */
export function toUnits(text: string, scale: number): bigint | undefined {
  const t = text.trim();
  if (!DECIMAL.test(t)) return undefined;
  const [whole, frac = ""] = t.split(".");
  const significant = frac.replace(/0+$/, "");
  if (significant.length > scale) {
    // more digits than the scale can hold: not representable (so not a multiple of the step)
    return undefined;
  }
  return BigInt(whole + frac.padEnd(scale, "0").slice(0, scale));
}

export function scaleOf(...values: string[]): number {
  let scale = 0;
  for (const v of values) {
    const frac = v.split(".")[1] ?? "";
    scale = Math.max(scale, frac.replace(/0+$/, "").length);
  }
  return scale;
}

export function isMultiple(value: string, step: string): boolean {
  const scale = Math.max(scaleOf(step), scaleOf(value));
  const v = toUnits(value, scale);
  const s = toUnits(step, scale);
  return v !== undefined && s !== undefined && s > 0n && v % s === 0n;
}

export function compare(a: string, b: string): number {
  const scale = scaleOf(a, b);
  const x = toUnits(a, scale) ?? 0n;
  const y = toUnits(b, scale) ?? 0n;
  return x < y ? -1 : x > y ? 1 : 0;
}

/** Strip trailing zeros: "0.05000000" -> "0.05", "1.00000000" -> "1". */
export function trim(text: string): string {
  if (!text.includes(".")) return text;
  const t = text.replace(/0+$/, "");
  return t.endsWith(".") ? t.slice(0, -1) : t;
}

/** Round `value` down to a multiple of `step`, as text with the step's decimals. */
export function floorToStep(value: number, step: string): string {
  const decimals = scaleOf(step);
  const s = Number(step);
  const n = Math.floor(value / s + 1e-9) * s;
  return n.toFixed(decimals);
}

/** Problems with an order before it is sent (empty list: fine to send). */
export function validateOrder(
  f: Filters,
  type: "LIMIT" | "MARKET",
  price: string,
  qty: string,
): string[] {
  const problems: string[] = [];
  const q = qty.trim();
  if (!DECIMAL.test(q) || Number(q) <= 0) problems.push("Enter a quantity.");
  else {
    if (!isMultiple(q, f.stepSize)) problems.push(`Quantity must be a multiple of ${trim(f.stepSize)}.`);
    if (compare(q, f.minQty) < 0) problems.push(`Quantity must be at least ${trim(f.minQty)}.`);
    if (compare(q, f.maxQty) > 0) problems.push(`Quantity must be at most ${trim(f.maxQty)}.`);
  }
  if (type === "LIMIT") {
    const p = price.trim();
    if (!DECIMAL.test(p) || Number(p) <= 0) problems.push("Enter a price.");
    else {
      if (!isMultiple(p, f.tickSize)) problems.push(`Price must be a multiple of the tick ${trim(f.tickSize)}.`);
      if (compare(p, f.minPrice) < 0) problems.push(`Price must be at least ${trim(f.minPrice)}.`);
      if (compare(p, f.maxPrice) > 0) problems.push(`Price must be at most ${trim(f.maxPrice)}.`);
      if (problems.length === 0 && Number(p) * Number(q) < Number(f.minNotional)) {
        problems.push(`Order value must be at least ${trim(f.minNotional)}.`);
      }
    }
  }
  return problems;
}
