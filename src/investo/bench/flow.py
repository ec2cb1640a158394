"""Reading the shared order-flow format (see ../shared/bench/orderflow.py).

Each line is ``op,id,side,price,qty``: ``L`` limit (GTC), ``M`` market (price 0),
``C`` cancel of an earlier id (the other fields repeat that order's). Ids are
unique and increasing; one market; prices in ticks, quantities in lots.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple


class FlowLine(NamedTuple):
    op: str  # "L", "M" or "C"
    id: int
    buy: bool
    price: int
    qty: int


class FlowError(ValueError):
    """A flow file line that does not follow the format."""


def read_flow(path: Path) -> list[FlowLine]:
    """Parse a whole flow file, with the line number in any error."""
    lines: list[FlowLine] = []
    with path.open() as handle:
        for number, text in enumerate(handle, 1):
            lines.append(_parse(text, number))
    return lines


def _parse(text: str, number: int) -> FlowLine:
    parts = text.strip().split(",")
    if len(parts) != 5 or parts[0] not in ("L", "M", "C") or parts[2] not in ("B", "S"):
        raise FlowError(f"line {number}: expected 'op,id,side,price,qty' with op L/M/C, side B/S: {text!r}")
    try:
        return FlowLine(parts[0], int(parts[1]), parts[2] == "B", int(parts[3]), int(parts[4]))
    except ValueError:
        raise FlowError(f"line {number}: id, price and qty must be integers: {text!r}") from None
