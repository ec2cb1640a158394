"""Exact conversion between the API's decimal strings and the core's integers.

Guarantees
----------
* No float anywhere, and no rounding: every conversion is exact integer arithmetic on the
  decimal digits (``Decimal`` is used only to hold parsed values, never to divide, so the
  ``decimal`` context's precision and rounding never apply).
* :func:`parse_decimal` accepts only a plain, finite, non-negative decimal: ASCII digits,
  optionally one ``.`` followed by at least one digit, at most 40 characters. No sign, no
  exponent, no ``NaN``/``Infinity``, no spaces, no ``_``, no leading or trailing dot.
* :func:`to_steps` returns ``value / step`` as an int only when ``value`` is an exact
  multiple of ``step``; otherwise it raises :class:`NotAMultipleOfStep` (the API layer
  answers Binance's -1013 ``Filter failure: PRICE_FILTER`` / ``LOT_SIZE``).
* :func:`format_steps` and :func:`format_amount` write Binance-style strings: fixed point,
  8 decimals, or more when the step or the asset needs more (``"950.05000000"``).
  ``to_steps(format_steps(n, step), step) == n`` for every ``n >= 0``.

Cost: linear in the number of digits (at most 40 on input).
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from typing import Final

__all__ = [
    "BINANCE_DECIMALS",
    "MAX_DECIMAL_LENGTH",
    "InvalidDecimal",
    "NotAMultipleOfStep",
    "UnitsError",
    "decimals_of",
    "format_amount",
    "format_steps",
    "parse_decimal",
    "to_steps",
]

MAX_DECIMAL_LENGTH: Final = 40
BINANCE_DECIMALS: Final = 8

_PLAIN_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?")


class UnitsError(ValueError):
    """A decimal that cannot be turned into whole units."""


class InvalidDecimal(UnitsError):
    """Not a plain, finite, non-negative decimal string."""


class NotAMultipleOfStep(UnitsError):
    """A value that is not a whole number of steps (never rounded)."""

    def __init__(self, value: Decimal, step: Decimal) -> None:
        self.value = value
        self.step = step
        super().__init__(f"{value} is not a multiple of the step {step}")


def _check_plain(text: str) -> None:
    """Raise :class:`InvalidDecimal` unless ``text`` is a plain non-negative decimal string."""
    if not isinstance(text, str):
        raise InvalidDecimal(f"expected a decimal string, got {type(text).__name__}")
    if len(text) > MAX_DECIMAL_LENGTH:
        raise InvalidDecimal(f"decimal string longer than {MAX_DECIMAL_LENGTH} characters")
    if not _PLAIN_DECIMAL.fullmatch(text):
        raise InvalidDecimal(f"{text!r} is not a plain non-negative decimal such as '950.05'")


def parse_decimal(text: str) -> Decimal:
    """``text`` as an exact ``Decimal``; :class:`InvalidDecimal` unless plain and non-negative."""
    _check_plain(text)
    return Decimal(text)


def _scaled_text(text: str) -> tuple[int, int]:
    """A plain decimal string as ``(mantissa, exponent)``: ``"950.05"`` → ``(95005, -2)``."""
    whole, _, fraction = text.partition(".")
    return int(whole + fraction), -len(fraction)


def _scaled(value: Decimal) -> tuple[int, int]:
    """``(mantissa, exponent)`` with ``value == mantissa * 10**exponent``, both exact ints."""
    sign, digits, exponent = value.as_tuple()
    if not isinstance(exponent, int):
        raise InvalidDecimal(f"{value} is not finite")
    mantissa = int("".join(map(str, digits)) or "0")
    return (-mantissa if sign else mantissa), exponent


@lru_cache(maxsize=256)  # a market has two steps; they are checked on every order
def _check_step(step: Decimal) -> tuple[int, int]:
    if not isinstance(step, Decimal) or not step.is_finite() or step <= 0:
        raise InvalidDecimal(f"step must be a positive finite Decimal, got {step!r}")
    return _scaled(step)


def _pow10(n: int) -> int:
    if n < 0:
        raise ValueError("negative power of ten")
    return int(10**n)


def to_steps(text: str, step: Decimal) -> int:
    """How many ``step``s make ``text``, exactly; :class:`NotAMultipleOfStep` if not whole."""
    _check_plain(text)
    value_mantissa, value_exponent = _scaled_text(text)
    step_mantissa, step_exponent = _check_step(step)
    common = min(value_exponent, step_exponent)
    numerator = value_mantissa * _pow10(value_exponent - common)
    denominator = step_mantissa * _pow10(step_exponent - common)
    steps, remainder = divmod(numerator, denominator)
    if remainder:
        raise NotAMultipleOfStep(Decimal(text), step)
    return steps


def decimals_of(step: Decimal) -> int:
    """Decimal places ``step`` needs: ``0.05`` → 2, ``0.050`` → 2, ``10`` → 0."""
    _, exponent = _scaled(step.normalize())
    return max(0, -exponent)


def _fixed_point(mantissa: int, exponent: int, places: int) -> str:
    """``mantissa * 10**exponent`` with exactly ``places`` decimals (needs ``-exponent <= places``)."""
    digits = str(mantissa * _pow10(places + exponent)).rjust(places + 1, "0")
    return f"{digits[:-places]}.{digits[-places:]}" if places else digits


def _check_count(n: int, what: str) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UnitsError(f"{what} must be a non-negative int, got {n!r}")


def format_steps(n: int, step: Decimal) -> str:
    """``n * step`` as a Binance-style string: 8 decimals, more if ``step`` needs more."""
    _check_count(n, "step count")
    cacheable = isinstance(step, Decimal) and step.is_finite()
    multiplier, scale, pattern = _step_format(step) if cacheable else _step_format_of(step)
    return pattern % divmod(n * multiplier, scale)


@lru_cache(maxsize=1024)
def _step_format(step: Decimal) -> tuple[int, int, str]:
    """``(multiplier, scale, pattern)``: ``n * step`` is ``pattern % divmod(n * multiplier, scale)``.

    Exact integers: ``n * step == n * multiplier / scale`` and ``scale`` is ``10**places``.
    Cached: market data formats every price and quantity it publishes with the same few
    steps (equal steps such as ``0.05`` and ``0.050`` give equal results).
    """
    return _step_format_of(step)


def _step_format_of(step: Decimal) -> tuple[int, int, str]:
    step_mantissa, step_exponent = _check_step(step)
    places = max(BINANCE_DECIMALS, decimals_of(step))
    pattern = f"%d.%0{places}d"  # places >= BINANCE_DECIMALS > 0
    return step_mantissa * _pow10(places + step_exponent), _pow10(places), pattern


def format_amount(units: int, decimals: int) -> str:
    """A balance of ``units`` smallest units of an asset with ``decimals`` decimals.

    8 decimals, or ``decimals`` if more: ``format_amount(12345, 2) == "123.45000000"``.
    """
    _check_count(units, "amount")
    _check_count(decimals, "decimals")
    return _fixed_point(units, -decimals, max(BINANCE_DECIMALS, decimals))
