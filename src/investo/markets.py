"""Market configuration: a TOML file of assets and markets, checked and turned into core markets.

Guarantees
----------
* ``load_markets(None)`` reads the built-in ``investo/markets.toml`` (package data);
  ``load_markets(path)`` reads yours. The format is documented in that file.
* Every amount is a decimal *string* read with :mod:`investo.api.units` (a TOML float is
  refused: it is not exact) and converted exactly, never rounded: prices to ticks,
  quantities to lots, ``min_notional`` to the quote asset's smallest units.
* Each :class:`MarketSpec` carries the decimal view for the API edge and ``.core``, the
  :class:`investo.core.markets.Market` in integer units, with
  ``notional_unit = tick_size × lot_size`` in the quote's smallest units and
  ``lot_units = lot_size`` in the base's smallest units; a market where either is not a
  whole number is refused.
* Anything wrong raises :class:`MarketConfigError` naming the file, the market (or asset)
  and the field. Unknown keys are refused too, so a misspelt field is never ignored.

Cost: linear in the number of markets; a hundred load in milliseconds.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, Inexact, localcontext
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Final

from investo.api import units
from investo.core.markets import BPS, Market

__all__ = [
    "DEFAULT_MAX_LOTS",
    "DEFAULT_MAX_TICKS",
    "MAX_ASSET_DECIMALS",
    "MarketConfig",
    "MarketConfigError",
    "MarketSpec",
    "load_config",
    "load_markets",
    "parse_config",
]

MAX_ASSET_DECIMALS: Final = 18
DEFAULT_MAX_TICKS: Final = 10**12
DEFAULT_MAX_LOTS: Final = 10**9

_ASSET_NAME = re.compile(r"[A-Z0-9]{1,20}")
_SYMBOL = re.compile(r"[A-Z0-9]{2,40}")
_ASSET_FIELDS = frozenset({"decimals"})
_MARKET_FIELDS = frozenset(
    {
        "base",
        "quote",
        "tick_size",
        "lot_size",
        "min_price",
        "max_price",
        "min_qty",
        "max_qty",
        "min_notional",
        "maker_fee_bps",
        "taker_fee_bps",
        "initial_price",
    }
)


class MarketConfigError(ValueError):
    """A markets file that cannot be used; the message names the file, market and field."""


@dataclass(frozen=True, slots=True)
class MarketSpec:
    """One market as the API edge sees it (decimal steps) with its integer ``core`` twin."""

    symbol: str
    base: str
    quote: str
    base_decimals: int
    quote_decimals: int
    tick_size: Decimal
    lot_size: Decimal
    min_price: Decimal
    max_price: Decimal
    min_qty: Decimal
    max_qty: Decimal
    min_notional: Decimal
    maker_fee_bps: int
    taker_fee_bps: int
    initial_price: Decimal | None
    core: Market

    def price_to_ticks(self, text: str) -> int:
        """A price string in whole ticks (raises :class:`units.NotAMultipleOfStep`, never rounds)."""
        return units.to_steps(text, self.tick_size)

    def qty_to_lots(self, text: str) -> int:
        """A quantity string in whole lots (raises :class:`units.NotAMultipleOfStep`, never rounds)."""
        return units.to_steps(text, self.lot_size)

    def format_price(self, ticks: int) -> str:
        return units.format_steps(ticks, self.tick_size)

    def format_qty(self, lots: int) -> str:
        return units.format_steps(lots, self.lot_size)

    @property
    def initial_price_ticks(self) -> int | None:
        return None if self.initial_price is None else self.price_to_ticks(_plain(self.initial_price))


@dataclass(frozen=True, slots=True)
class MarketConfig:
    """Assets (name → decimals) and markets (symbol → spec), in file order."""

    assets: Mapping[str, int]
    markets: Mapping[str, MarketSpec]


class _Table:
    """Typed reads from one TOML table, every error naming ``where`` and the field."""

    def __init__(self, data: object, where: str, allowed: frozenset[str]) -> None:
        if not isinstance(data, dict):
            raise MarketConfigError(f"{where}: must be a table")
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise MarketConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
        self.data: dict[str, object] = data
        self.where = where

    def error(self, name: str, message: str) -> MarketConfigError:
        return MarketConfigError(f"{self.where}.{name}: {message}")

    def text(self, name: str, default: str | None = None) -> str:
        value = self.data.get(name, default)
        if value is None:
            raise self.error(name, "missing")
        if not isinstance(value, str):
            raise self.error(name, f'must be a string (e.g. "0.05"), got {type(value).__name__} {value!r}')
        return value

    def decimal(self, name: str, default: str | None = None) -> Decimal:
        text = self.text(name, default)
        try:
            return units.parse_decimal(text)
        except units.UnitsError as exc:
            raise self.error(name, str(exc)) from None

    def steps(self, name: str, step: Decimal, default_steps: int | None = None) -> tuple[Decimal, int]:
        """A decimal field and its exact number of ``step``s (``default_steps`` when absent)."""
        if name not in self.data and default_steps is not None:
            return Decimal(units.format_steps(default_steps, step)), default_steps
        value = self.decimal(name)
        try:
            return value, units.to_steps(self.text(name), step)
        except units.NotAMultipleOfStep:
            raise self.error(name, f"{_plain(value)} is not a multiple of {_plain(step)}") from None

    def integer(self, name: str, low: int, high: int) -> int:
        value = self.data.get(name)
        if value is None:
            raise self.error(name, "missing")
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(name, f"must be an integer, got {type(value).__name__} {value!r}")
        if not low <= value <= high:
            raise self.error(name, f"must be between {low} and {high}, got {value}")
        return value


def _plain(value: Decimal) -> str:
    """``value`` in fixed-point notation (``str`` would write ``1E-7``)."""
    return format(value, "f")


def _exact_product(a: Decimal, b: Decimal) -> Decimal:
    """``a × b`` with every digit kept (inputs are at most 40 characters each)."""
    with localcontext() as context:
        context.prec = 2 * units.MAX_DECIMAL_LENGTH + 2
        context.traps[Inexact] = True
        return a * b


def _smallest_units(amount: Decimal, asset: str, decimals: int, table: _Table, name: str, what: str) -> int:
    """``amount`` of ``asset`` in its smallest units, or an error saying why it is not whole."""
    units_count = Fraction(amount) * Fraction(10**decimals)
    if units_count.denominator != 1:
        smallest = _plain(Decimal(1).scaleb(-decimals))
        reason = f"not a whole number of {asset}'s smallest unit ({smallest})"
        raise table.error(name, f"{what} = {_plain(amount)} {asset}, {reason}")
    return units_count.numerator


def _parse_assets(data: object, source: str) -> dict[str, int]:
    if not isinstance(data, dict) or not data:
        raise MarketConfigError(f"{source}: [assets] must define at least one asset")
    assets: dict[str, int] = {}
    for name, body in data.items():
        where = f"{source}: assets.{name}"
        if not _ASSET_NAME.fullmatch(name):
            raise MarketConfigError(f"{where}: asset names are 1-20 characters A-Z 0-9")
        assets[name] = _Table(body, where, _ASSET_FIELDS).integer("decimals", 0, MAX_ASSET_DECIMALS)
    return assets


def _asset(table: _Table, name: str, assets: Mapping[str, int]) -> str:
    asset = table.text(name)
    if asset not in assets:
        raise table.error(name, f"unknown asset {asset!r} (define it under [assets.{asset}])")
    return asset


def _positive_step(table: _Table, name: str) -> Decimal:
    step = table.decimal(name)
    if step <= 0:
        raise table.error(name, "must be greater than 0")
    return step


def _parse_market(symbol: str, body: object, assets: Mapping[str, int], source: str) -> MarketSpec:
    where = f"{source}: markets.{symbol}"
    if not _SYMBOL.fullmatch(symbol):
        raise MarketConfigError(f"{where}: symbols are 2-40 characters A-Z 0-9, e.g. TATAINR")
    table = _Table(body, where, _MARKET_FIELDS)
    base, quote = _asset(table, "base", assets), _asset(table, "quote", assets)
    if base == quote:
        raise table.error("quote", "must differ from base")
    tick, lot = _positive_step(table, "tick_size"), _positive_step(table, "lot_size")
    lot_units = _smallest_units(lot, base, assets[base], table, "lot_size", "lot_size")
    notional_unit = _smallest_units(
        _exact_product(tick, lot), quote, assets[quote], table, "tick_size", "tick_size × lot_size"
    )

    min_price, min_ticks = table.steps("min_price", tick, default_steps=1)
    max_price, max_ticks = table.steps("max_price", tick, default_steps=DEFAULT_MAX_TICKS)
    min_qty, min_lots = table.steps("min_qty", lot, default_steps=1)
    max_qty, max_lots = table.steps("max_qty", lot, default_steps=DEFAULT_MAX_LOTS)
    _check_range(table, "price", min_ticks, max_ticks)
    _check_range(table, "qty", min_lots, max_lots)

    min_notional = table.decimal("min_notional", "0")
    min_notional_units = _smallest_units(
        min_notional, quote, assets[quote], table, "min_notional", "min_notional"
    )
    maker = table.integer("maker_fee_bps", 0, BPS - 1)
    taker = table.integer("taker_fee_bps", 0, BPS - 1)
    initial_price = _initial_price(table, tick, min_ticks, max_ticks)

    try:
        core = Market(
            symbol=symbol,
            base=base,
            quote=quote,
            notional_unit=notional_unit,
            lot_units=lot_units,
            maker_fee_bps=maker,
            taker_fee_bps=taker,
            min_price=min_ticks,
            max_price=max_ticks,
            min_qty=min_lots,
            max_qty=max_lots,
            min_notional=min_notional_units,
        )
    except ValueError as exc:
        raise MarketConfigError(f"{where}: {exc}") from None
    return MarketSpec(
        symbol=symbol,
        base=base,
        quote=quote,
        base_decimals=assets[base],
        quote_decimals=assets[quote],
        tick_size=tick,
        lot_size=lot,
        min_price=min_price,
        max_price=max_price,
        min_qty=min_qty,
        max_qty=max_qty,
        min_notional=min_notional,
        maker_fee_bps=maker,
        taker_fee_bps=taker,
        initial_price=initial_price,
        core=core,
    )


def _check_range(table: _Table, what: str, low: int, high: int) -> None:
    if low < 1:
        raise table.error(f"min_{what}", "must be at least one step")
    if high < low:
        raise table.error(f"max_{what}", f"must not be below min_{what}")


def _initial_price(table: _Table, tick: Decimal, min_ticks: int, max_ticks: int) -> Decimal | None:
    if "initial_price" not in table.data:
        return None
    price, ticks = table.steps("initial_price", tick)
    if not min_ticks <= ticks <= max_ticks:
        raise table.error("initial_price", f"{price} is outside [min_price, max_price]")
    return price


def parse_config(text: str, source: str = "<string>") -> MarketConfig:
    """Parse and check a markets TOML document; ``source`` names it in errors."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MarketConfigError(f"{source}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"assets", "markets"})
    if unknown:
        raise MarketConfigError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
    assets = _parse_assets(data.get("assets"), source)
    tables = data.get("markets")
    if not isinstance(tables, dict) or not tables:
        raise MarketConfigError(f"{source}: [markets] must define at least one market")
    markets = {symbol: _parse_market(symbol, body, assets, source) for symbol, body in tables.items()}
    return MarketConfig(assets=assets, markets=markets)


def read_text(path: Path | None) -> tuple[str, str]:
    """The markets file's text and a name for it in messages (the built-in file when ``path`` is None)."""
    if path is None:
        default = resources.files("investo").joinpath("markets.toml")
        return default.read_text(encoding="utf-8"), "investo/markets.toml"
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise MarketConfigError(f"{path}: cannot read markets file: {exc}") from None


def load_config(path: Path | None = None) -> MarketConfig:
    """Assets and markets from ``path``, or from the built-in file when ``path`` is None."""
    text, source = read_text(path)
    return parse_config(text, source)


def load_markets(path: Path | None = None) -> dict[str, MarketSpec]:
    """Markets by symbol from ``path``, or from the built-in file when ``path`` is None."""
    return dict(load_config(path).markets)
