"""Every record that enters an engine and every event that leaves one.

Invariants
----------
* Messages are frozen msgspec Structs: they never change after construction and
  they are not tracked by the garbage collector (``gc=False``; every field is an
  int, a str or an enum, so no reference cycle can pass through them).
* Commands are imperative (``PlaceOrder``), events past tense (``OrderRested``).
* Money is integers: prices in ticks, quantities in lots, balances and fees in an
  asset's smallest unit. Decimal strings exist only at the API edge.
* Time is ``ts`` (milliseconds since the epoch), stamped when the record was
  appended to its log and copied into every event the record causes. No engine
  reads a clock.
* Each engine numbers the events it emits with ``seq``, starting at 1 and
  increasing by one per event (per market for matching, per shard for accounts).
  The accounts engine's ``OrderAccepted`` is both its event and the record it
  hands to matching; it is numbered by its ``order_id`` instead.

Encoding: every message carries a tag (its class name), so a log can hold a mix
of them and decode each back with :data:`RECORD_DECODER` / :data:`EVENT_DECODER`.
"""

from __future__ import annotations

from enum import IntEnum

import msgspec


class Side(IntEnum):
    BUY = 0
    SELL = 1


class OrderType(IntEnum):
    LIMIT = 0
    LIMIT_MAKER = 1  # post-only: rejected if any part would take liquidity
    MARKET = 2


class TimeInForce(IntEnum):
    GTC = 0
    IOC = 1
    FOK = 2


class StpMode(IntEnum):
    """Binance's self-trade prevention modes."""

    NONE = 0
    EXPIRE_TAKER = 1
    EXPIRE_MAKER = 2
    EXPIRE_BOTH = 3


class RejectCode(IntEnum):
    """Why an engine refused a command. The API edge maps each to Binance's code."""

    INSUFFICIENT_BALANCE = 1
    UNKNOWN_MARKET = 2
    INVALID_PRICE = 3  # not positive, or outside the market's price range
    INVALID_QUANTITY = 4  # not positive, or outside the market's quantity range
    MIN_NOTIONAL = 5
    DUPLICATE_CLIENT_ORDER_ID = 6
    WOULD_TAKE = 7  # a LIMIT_MAKER order that would match immediately
    UNKNOWN_ORDER = 8  # cancel of an order that is not open (unknown or finished)
    NOT_OWNER = 9  # cancel of somebody else's order
    INVALID_ORDER = 10  # a combination of fields that makes no order
    INVALID_AMOUNT = 11  # a deposit or withdrawal that is not positive
    UNKNOWN_ASSET = 12


class ExpireReason(IntEnum):
    """Why an order left the book, or never reached it, without a full fill."""

    IOC_REMAINDER = 1  # IOC or market order: what did not fill at once
    FOK_UNFILLABLE = 2  # FOK order that could not fill completely at once
    NO_LIQUIDITY = 3  # market order with nothing (more) to take
    SELF_TRADE = 4  # expired by self-trade prevention
    BUDGET_EXHAUSTED = 5  # market buy that spent all the quote it may spend


class CancelReason(IntEnum):
    USER = 1  # CancelOrder
    CANCEL_ALL = 2  # CancelAll


_MSG = {"frozen": True, "gc": False, "tag": True, "tag_field": "kind"}


# --------------------------------------------------------------------------------
# Commands: what the gateway appends to the accounts log.
# --------------------------------------------------------------------------------


class Deposit(msgspec.Struct, **_MSG):
    ts: int
    user: int
    asset: str
    amount: int


class Withdraw(msgspec.Struct, **_MSG):
    ts: int
    user: int
    asset: str
    amount: int


class PlaceOrder(msgspec.Struct, **_MSG):
    """A new order as the user asked for it.

    ``price`` is in ticks (0 for MARKET), ``qty`` in lots. A MARKET BUY may give
    ``quote_qty`` (quote units to spend, fees included) instead of ``qty``.
    """

    ts: int
    user: int
    market: str
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    quote_qty: int = 0
    client_order_id: str = ""
    stp: StpMode = StpMode.EXPIRE_MAKER


# --------------------------------------------------------------------------------
# Records of the matching log.
# --------------------------------------------------------------------------------


class OrderAccepted(msgspec.Struct, **_MSG):
    """An order whose funds the accounts engine has reserved; input of matching.

    ``quote_limit`` is the most quote a BUY may spend, fees included (its
    reservation). Matching enforces it on MARKET buys; a LIMIT buy cannot exceed
    it by construction. It is 0 for sells.
    """

    ts: int
    market: str
    order_id: int
    user: int
    side: Side
    type: OrderType
    tif: TimeInForce
    price: int
    qty: int
    quote_limit: int
    client_order_id: str
    stp: StpMode


class CancelOrder(msgspec.Struct, **_MSG):
    """Cancel one order, named by ``order_id`` or else by ``client_order_id``."""

    ts: int
    user: int
    market: str
    order_id: int = 0
    client_order_id: str = ""


class CancelAll(msgspec.Struct, **_MSG):
    """Cancel all of ``user``'s open orders in ``market``."""

    ts: int
    user: int
    market: str


# --------------------------------------------------------------------------------
# Events of the matching engine (``seq`` per market).
# --------------------------------------------------------------------------------


class OrderRested(msgspec.Struct, **_MSG):
    """The order (or what is left of it, ``qty`` lots) now rests on the book."""

    seq: int
    ts: int
    market: str
    order_id: int
    user: int
    side: Side
    price: int
    qty: int


class TradeExecuted(msgspec.Struct, **_MSG):
    """One match, at the maker's price. Fees are in the quote asset."""

    seq: int
    ts: int
    market: str
    trade_id: int
    price: int
    qty: int
    taker_side: Side
    maker_order_id: int
    maker_user: int
    taker_order_id: int
    taker_user: int
    maker_fee: int
    taker_fee: int


class OrderPartiallyFilled(msgspec.Struct, **_MSG):
    """After a trade, the order still has ``remaining`` lots to fill."""

    seq: int
    ts: int
    market: str
    order_id: int
    user: int
    remaining: int


class OrderFilled(msgspec.Struct, **_MSG):
    """After a trade, the order is completely filled and finished."""

    seq: int
    ts: int
    market: str
    order_id: int
    user: int


class OrderCanceled(msgspec.Struct, **_MSG):
    """The order left the book at its owner's request with ``remaining`` lots."""

    seq: int
    ts: int
    market: str
    order_id: int
    user: int
    side: Side
    price: int
    remaining: int
    reason: CancelReason


class OrderExpired(msgspec.Struct, **_MSG):
    """The order finished unfilled by ``remaining`` lots, for ``reason``.

    ``was_resting`` tells whether those lots were on the book (self-trade
    prevention can expire a resting maker).
    """

    seq: int
    ts: int
    market: str
    order_id: int
    user: int
    side: Side
    price: int
    remaining: int
    reason: ExpireReason
    was_resting: bool


class OrderRejected(msgspec.Struct, **_MSG):
    """A PlaceOrder or OrderAccepted that was refused; nothing changed."""

    seq: int
    ts: int
    market: str
    order_id: int  # 0 when refused before an id was assigned
    user: int
    client_order_id: str
    code: RejectCode


class CancelRejected(msgspec.Struct, **_MSG):
    """A CancelOrder that was refused; nothing changed."""

    seq: int
    ts: int
    market: str
    user: int
    order_id: int
    client_order_id: str
    code: RejectCode


# --------------------------------------------------------------------------------
# Events of the accounts engine (``seq`` per shard).
# --------------------------------------------------------------------------------


class Deposited(msgspec.Struct, **_MSG):
    seq: int
    ts: int
    user: int
    asset: str
    amount: int


class Withdrawn(msgspec.Struct, **_MSG):
    seq: int
    ts: int
    user: int
    asset: str
    amount: int


class WithdrawRejected(msgspec.Struct, **_MSG):
    seq: int
    ts: int
    user: int
    asset: str
    amount: int
    code: RejectCode


class DepositRejected(msgspec.Struct, **_MSG):
    """A Deposit that was refused (amount not positive, unknown asset); nothing changed."""

    seq: int
    ts: int
    user: int
    asset: str
    amount: int
    code: RejectCode


Command = Deposit | Withdraw | PlaceOrder | CancelOrder | CancelAll
MatchingRecord = OrderAccepted | CancelOrder | CancelAll
MatchingEvent = (
    OrderRested
    | TradeExecuted
    | OrderPartiallyFilled
    | OrderFilled
    | OrderCanceled
    | OrderExpired
    | OrderRejected
    | CancelRejected
)
AccountsEvent = Deposited | DepositRejected | Withdrawn | WithdrawRejected | OrderAccepted | OrderRejected
Event = MatchingEvent | Deposited | DepositRejected | Withdrawn | WithdrawRejected | OrderAccepted
Record = Command | OrderAccepted

RECORD_DECODER: msgspec.msgpack.Decoder[Record] = msgspec.msgpack.Decoder(Record)
EVENT_DECODER: msgspec.msgpack.Decoder[Event] = msgspec.msgpack.Decoder(Event)
ENCODER = msgspec.msgpack.Encoder()
COMMAND_DECODER: msgspec.msgpack.Decoder[Command] = msgspec.msgpack.Decoder(Command)
