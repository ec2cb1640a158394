"""Market configuration from TOML: the built-in file, a hundred markets, and clear errors."""

from __future__ import annotations

from decimal import Decimal
from importlib import resources
from pathlib import Path

import pytest

from investo.api.units import NotAMultipleOfStep
from investo.core.markets import Market
from investo.markets import (
    MarketConfigError,
    MarketSpec,
    load_config,
    load_markets,
    parse_config,
)

Value = str | int | float | bool

ASSETS: dict[str, int] = {"INR": 2, "TATA": 0}
TATA: dict[str, Value] = {
    "base": "TATA",
    "quote": "INR",
    "tick_size": "0.05",
    "lot_size": "1",
    "min_price": "1.00",
    "max_price": "100000",
    "maker_fee_bps": 10,
    "taker_fee_bps": 20,
}


def toml_value(value: Value) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def toml(assets: dict[str, int], markets: dict[str, dict[str, Value]]) -> str:
    lines = []
    for name, decimals in assets.items():
        lines += [f"[assets.{name}]", f"decimals = {decimals}", ""]
    for symbol, fields in markets.items():
        lines.append(f"[markets.{symbol}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in fields.items()]
        lines.append("")
    return "\n".join(lines)


def one_market(assets: dict[str, int] | None = None, **overrides: Value | None) -> MarketSpec:
    fields = {**TATA, **overrides}
    text = toml(assets or ASSETS, {"TATAINR": {k: v for k, v in fields.items() if v is not None}})
    return parse_config(text, "test.toml").markets["TATAINR"]


def refused(match: str, assets: dict[str, int] | None = None, **overrides: Value | None) -> str:
    with pytest.raises(MarketConfigError, match=match) as info:
        one_market(assets, **overrides)
    return str(info.value)


# --- the built-in file --------------------------------------------------------------------


def test_builtin_markets() -> None:
    markets = load_markets(None)
    assert list(markets) == ["TATAINR", "ZOMATOINR"]
    tata, zomato = markets["TATAINR"], markets["ZOMATOINR"]

    assert (tata.base, tata.quote, tata.base_decimals, tata.quote_decimals) == ("TATA", "INR", 0, 2)
    assert (tata.tick_size, tata.lot_size) == (Decimal("0.05"), Decimal("1"))
    assert tata.core == Market(
        symbol="TATAINR",
        base="TATA",
        quote="INR",
        notional_unit=5,  # 0.05 INR x 1 share = 5 paise
        lot_units=1,
        maker_fee_bps=10,
        taker_fee_bps=20,
        min_price=1,
        max_price=2_000_000,  # 100000 INR in 0.05 ticks
        min_qty=1,
        max_qty=1_000_000,
        min_notional=1_000,  # 10 INR in paise
    )
    assert tata.initial_price == Decimal("950.00")
    assert tata.initial_price_ticks == 19_000
    assert tata.format_price(19_000) == "950.00000000"

    assert zomato.core.notional_unit == 1  # 0.01 INR x 1 share = 1 paisa
    assert zomato.initial_price_ticks == 25_000
    assert (zomato.core.maker_fee_bps, zomato.core.taker_fee_bps) == (10, 20)


def test_builtin_file_is_package_data() -> None:
    packaged = resources.files("investo").joinpath("markets.toml")
    assert packaged.is_file()
    assert load_config(None) == parse_config(packaged.read_text(encoding="utf-8"), "investo/markets.toml")
    assert load_config(None).assets == {"INR": 2, "TATA": 0, "ZOMATO": 0}


def test_load_from_a_path(tmp_path: Path) -> None:
    path = tmp_path / "markets.toml"
    path.write_text(toml(ASSETS, {"TATAINR": dict(TATA)}), encoding="utf-8")
    assert list(load_markets(path)) == ["TATAINR"]


def test_spec_conversions() -> None:
    tata = load_markets(None)["TATAINR"]
    assert tata.price_to_ticks("950.05") == 19_001
    assert tata.qty_to_lots("3") == 3
    assert tata.format_qty(3) == "3.00000000"
    with pytest.raises(NotAMultipleOfStep):
        tata.price_to_ticks("950.03")
    with pytest.raises(NotAMultipleOfStep):
        tata.qty_to_lots("1.5")


# --- a hundred markets --------------------------------------------------------------------

STEPS = [("0.05", "1", 0, 2), ("0.01", "0.001", 3, 5), ("0.5", "0.1", 1, 2), ("1", "10", 0, 0)]


def hundred_markets() -> tuple[dict[str, int], dict[str, dict[str, Value]]]:
    assets: dict[str, int] = {"INR": 2, "INRX": 5, "PTS": 0}
    quotes = {2: "INR", 5: "INRX", 0: "PTS"}
    markets: dict[str, dict[str, Value]] = {}
    for i in range(100):
        tick, lot, base_decimals, quote_decimals = STEPS[i % len(STEPS)]
        base = f"S{i:03d}"
        assets[base] = base_decimals
        quote = quotes[quote_decimals]
        markets[f"{base}{quote}"] = {
            "base": base,
            "quote": quote,
            "tick_size": tick,
            "lot_size": lot,
            "min_notional": "1",
            "maker_fee_bps": i % 50,
            "taker_fee_bps": 50 + i % 50,
            "initial_price": str(Decimal(tick) * (100 + i)),
        }
    return assets, markets


def test_a_hundred_markets_load(tmp_path: Path) -> None:
    assets, tables = hundred_markets()
    path = tmp_path / "hundred.toml"
    path.write_text(toml(assets, tables), encoding="utf-8")

    markets = load_markets(path)

    assert list(markets) == list(tables)
    assert len(markets) == 100
    for i, (symbol, spec) in enumerate(markets.items()):
        tick, lot, base_decimals, quote_decimals = STEPS[i % len(STEPS)]
        assert spec.symbol == spec.core.symbol == symbol
        assert spec.core.notional_unit == int(Decimal(tick) * Decimal(lot) * 10**quote_decimals)
        assert spec.core.lot_units == int(Decimal(lot) * 10**base_decimals)
        assert spec.core.min_notional == 10**quote_decimals
        assert spec.initial_price_ticks == 100 + i
        assert (spec.core.maker_fee_bps, spec.core.taker_fee_bps) == (i % 50, 50 + i % 50)


def test_fractional_lots_work_when_the_quote_has_enough_decimals() -> None:
    spec = one_market({"INR": 5, "TATA": 3}, lot_size="0.001")
    assert (spec.core.notional_unit, spec.core.lot_units) == (5, 1)  # 0.05 x 0.001 = 0.00005 INR


# --- clear errors -------------------------------------------------------------------------


def test_tick_times_lot_must_be_whole_quote_units() -> None:
    message = refused("not a whole number", {"INR": 2, "TATA": 3}, lot_size="0.001")
    assert "test.toml: markets.TATAINR.tick_size" in message
    assert "tick_size × lot_size = 0.00005 INR" in message


def test_lot_must_be_whole_base_units() -> None:
    assert "markets.TATAINR.lot_size" in refused("not a whole number", {"INR": 5, "TATA": 0}, lot_size="0.5")


@pytest.mark.parametrize(
    "field", ["tick_size", "lot_size", "min_price", "max_qty", "min_notional", "initial_price"]
)
def test_floats_are_refused(field: str) -> None:
    message = refused("must be a string", **{field: 1.5})
    assert f"markets.TATAINR.{field}" in message


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("tick_size", "0", "greater than 0"),
        ("tick_size", "-0.05", "not a plain non-negative decimal"),
        ("tick_size", "5e-2", "not a plain non-negative decimal"),
        ("lot_size", "NaN", "not a plain non-negative decimal"),
        ("min_price", "0.03", "0.03 is not a multiple of 0.05"),
        ("min_price", "0", "at least one step"),
        ("max_price", "0.05", "must not be below min_price"),
        ("min_qty", "1.5", "not a multiple of 1"),
        ("max_qty", "0", "must not be below min_qty"),
        ("min_notional", "0.001", "not a whole number"),
        ("initial_price", "950.03", "not a multiple of 0.05"),
        ("initial_price", "200000", "outside"),
        ("maker_fee_bps", 10_000, "between 0 and 9999"),
        ("taker_fee_bps", -1, "between 0 and 9999"),
        ("taker_fee_bps", True, "must be an integer"),
        ("maker_fee_bps", "10", "must be an integer"),
        ("maker_fee_bps", None, "missing"),
        ("tick_size", None, "missing"),
        ("base", "ZOMATO", "unknown asset 'ZOMATO'"),
        ("quote", "TATA", "must differ from base"),
        ("tick_sise", "0.05", "unknown field"),
    ],
)
def test_bad_values_name_the_market_and_field(field: str, value: Value | None, match: str) -> None:
    message = refused(match, **{field: value})
    assert message.startswith("test.toml: markets.TATAINR")
    assert field in message


def test_bad_assets() -> None:
    for decimals in (19, -1):
        message = refused("between 0 and 18", {"INR": 2, "TATA": decimals})
        assert "assets.TATA.decimals" in message
    with pytest.raises(MarketConfigError, match="asset names"):
        parse_config(toml({"inr": 2}, {}), "x.toml")


def test_bad_documents(tmp_path: Path) -> None:
    with pytest.raises(MarketConfigError, match="not valid TOML"):
        parse_config("[markets", "x.toml")
    with pytest.raises(MarketConfigError, match="at least one market"):
        parse_config(toml(ASSETS, {}), "x.toml")
    with pytest.raises(MarketConfigError, match="at least one asset"):
        parse_config("[markets.TATAINR]\nbase = 'TATA'", "x.toml")
    with pytest.raises(MarketConfigError, match="unknown top-level key"):
        parse_config("fees = 1\n" + toml(ASSETS, {"TATAINR": dict(TATA)}), "x.toml")
    with pytest.raises(MarketConfigError, match=r"markets\.tata-inr: symbols"):
        parse_config(toml(ASSETS, {'"tata-inr"': dict(TATA)}), "x.toml")
    missing = tmp_path / "missing.toml"
    with pytest.raises(MarketConfigError, match="cannot read markets file") as info:
        load_markets(missing)
    assert str(missing) in str(info.value)


def test_errors_are_value_errors() -> None:
    assert issubclass(MarketConfigError, ValueError)


def test_optional_fields_default_to_the_core_defaults() -> None:
    spec = one_market(min_price=None, max_price=None)
    assert (spec.min_price, spec.max_price) == (Decimal("0.05"), Decimal("50000000000"))
    assert (spec.min_qty, spec.max_qty) == (Decimal("1"), Decimal("1000000000"))
    assert (spec.core.min_price, spec.core.max_price) == (1, 10**12)
    assert (spec.core.min_qty, spec.core.max_qty, spec.core.min_notional) == (1, 10**9, 0)
    assert spec.initial_price is None and spec.initial_price_ticks is None
