import { describe, expect, it } from "vitest";
import { compare, floorToStep, isMultiple, toUnits, trim, validateOrder, type Filters } from "./decimal";

const tata: Filters = {
  tickSize: "0.05000000",
  minPrice: "0.05000000",
  maxPrice: "100000.00000000",
  stepSize: "1.00000000",
  minQty: "1.00000000",
  maxQty: "1000000.00000000",
  minNotional: "10.00000000",
};

describe("decimal", () => {
  it("converts exactly", () => {
    expect(toUnits("949.50", 2)).toBe(94950n);
    expect(toUnits("1.005", 2)).toBeUndefined();
    expect(toUnits("1e3", 2)).toBeUndefined();
    expect(toUnits("-1", 2)).toBeUndefined();
  });

  it("checks multiples of a step without floating point", () => {
    expect(isMultiple("949.55", "0.05000000")).toBe(true);
    expect(isMultiple("949.53", "0.05000000")).toBe(false);
    expect(isMultiple("0.3", "0.1")).toBe(true); // 0.3 % 0.1 != 0 in floats
    expect(isMultiple("2.5", "1.00000000")).toBe(false);
    expect(compare("10", "9.99")).toBe(1);
    expect(trim("0.05000000")).toBe("0.05");
    expect(trim("1.00000000")).toBe("1");
    expect(floorToStep(949.57, "0.05")).toBe("949.55");
  });

  it("validates orders against the market's filters", () => {
    expect(validateOrder(tata, "LIMIT", "949.55", "3")).toEqual([]);
    expect(validateOrder(tata, "LIMIT", "949.53", "3")).toEqual(["Price must be a multiple of the tick 0.05."]);
    expect(validateOrder(tata, "LIMIT", "949.55", "1.5")).toEqual(["Quantity must be a multiple of 1."]);
    expect(validateOrder(tata, "LIMIT", "5", "1")).toEqual(["Order value must be at least 10."]);
    expect(validateOrder(tata, "LIMIT", "", "1")).toEqual(["Enter a price."]);
    expect(validateOrder(tata, "MARKET", "", "2")).toEqual([]);
    expect(validateOrder(tata, "MARKET", "", "")).toEqual(["Enter a quantity."]);
  });
});
