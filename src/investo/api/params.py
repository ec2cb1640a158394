"""Reading request parameters the way Binance does, with Binance's errors.

A :class:`Params` wraps the decoded parameters of one request (query string and
form body together). Each accessor either returns a clean value or raises the
:class:`~investo.api.errors.ApiError` Binance would send: a missing mandatory
parameter is -1102, a malformed one -1100, an unknown symbol -1121, and so on.
Nothing here touches state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from urllib.parse import parse_qsl

from investo.api import errors, units
from investo.markets import MarketSpec

MAX_PARAMS = 64
MAX_VALUE_LENGTH = 1024
_DECIMAL = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_INTEGER = re.compile(r"^[0-9]{1,19}$")
_CLIENT_ORDER_ID = re.compile(r"^[.A-Za-z0-9_-]{1,36}$")
DECIMAL_RANGE = "^([0-9]{1,20})(\\.[0-9]{1,20})?$"
INT64_MAX = 2**63 - 1


def parse_query(text: str) -> dict[str, str]:
    """Decode a query string or form body; a repeated name is -1101."""
    out: dict[str, str] = {}
    try:
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_PARAMS)
    except ValueError:
        raise errors.too_many_params() from None
    for name, value in pairs:
        if name in out:
            raise errors.duplicate_param(name)
        out[name] = value
    return out


class Params:
    """The parameters of one request, read with Binance's rules."""

    def __init__(self, values: Mapping[str, str]) -> None:
        if len(values) > MAX_PARAMS:
            raise errors.too_many_params()
        self.values = values

    def has(self, name: str) -> bool:
        return self.values.get(name, "") != ""

    def text(self, name: str, default: str | None = None) -> str:
        value = self.values.get(name, "")
        if value == "":
            if default is None:
                raise errors.missing(name)
            return default
        if len(value) > MAX_VALUE_LENGTH:
            raise errors.illegal_chars(name, f"at most {MAX_VALUE_LENGTH} characters")
        return value

    def optional_text(self, name: str) -> str | None:
        return self.text(name, "") or None

    def integer(self, name: str, default: int | None = None, low: int = 0, high: int = INT64_MAX) -> int:
        value = self.values.get(name, "")
        if value == "":
            if default is None:
                raise errors.missing(name)
            return default
        if not _INTEGER.fullmatch(value):
            raise errors.illegal_chars(name, f"{low}-{high}")
        number = int(value)
        if not low <= number <= high:
            raise errors.illegal_chars(name, f"{low}-{high}")
        return number

    def optional_integer(self, name: str, low: int = 0, high: int = INT64_MAX) -> int | None:
        return self.integer(name, -1, low, high) if self.has(name) else None

    def decimal_text(self, name: str) -> str:
        """A plain non-negative decimal string (Binance's '^([0-9]{1,20})(\\.[0-9]{1,20})?$')."""
        value = self.text(name)
        if not _DECIMAL.fullmatch(value):
            raise errors.illegal_chars(name, DECIMAL_RANGE)
        return value

    def choice(self, name: str, allowed: Mapping[str, object], error: Callable[[], errors.ApiError]) -> str:
        """One of ``allowed``'s keys, else the error ``error()`` makes (made only when needed)."""
        value = self.text(name)
        if value not in allowed:
            raise error()
        return value

    def symbol(self, markets: Mapping[str, MarketSpec], name: str = "symbol") -> MarketSpec:
        value = self.text(name)
        spec = markets.get(value.upper())
        if spec is None:
            raise errors.invalid_symbol()
        return spec

    def client_order_id(self, name: str) -> str | None:
        value = self.optional_text(name)
        if value is not None and not _CLIENT_ORDER_ID.fullmatch(value):
            raise errors.illegal_chars(name, "^[\\.A-Z\\:/a-z0-9_-]{1,36}$")
        return value


def steps(spec: MarketSpec, text: str, *, price: bool) -> int:
    """A validated decimal string in ticks (price) or lots (quantity), with the filter errors."""
    try:
        return spec.price_to_ticks(text) if price else spec.qty_to_lots(text)
    except units.NotAMultipleOfStep:
        raise errors.filter_failure("PRICE_FILTER" if price else "LOT_SIZE") from None
    except units.UnitsError:
        raise errors.illegal_chars("price" if price else "quantity", DECIMAL_RANGE) from None


def amount(text: str, decimals: int, name: str) -> int:
    """A decimal amount of an asset in its smallest units; too many decimals is -1111."""
    try:
        return units.to_steps(text, Decimal(1).scaleb(-decimals))
    except units.NotAMultipleOfStep:
        raise errors.bad_precision() from None
    except units.UnitsError:
        raise errors.illegal_chars(name, DECIMAL_RANGE) from None
