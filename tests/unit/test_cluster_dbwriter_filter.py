"""The DB writer's shortcut for accounts entries: skip decoding what holds no deposit or withdrawal."""

from __future__ import annotations

from investo.cluster.dbwriter import _may_hold_accounts_rows
from investo.cluster.records import ENCODER, Output
from investo.core.messages import (
    Deposited,
    Event,
    OrderAccepted,
    OrderRejected,
    OrderType,
    RejectCode,
    Side,
    StpMode,
    TimeInForce,
    Withdrawn,
)


def accepted(client_order_id: str = "") -> OrderAccepted:
    return OrderAccepted(
        1, "AINR", 7, 3, Side.BUY, OrderType.LIMIT, TimeInForce.GTC, 100, 2, 200, client_order_id,
        StpMode.NONE,
    )  # fmt: skip


def encoded(*events: Event) -> bytes:
    return ENCODER.encode(Output(5, list(events)))


def test_entries_with_a_deposit_or_withdrawal_are_decoded() -> None:
    assert _may_hold_accounts_rows(encoded(Deposited(1, 2, 3, "INR", 100)))
    assert _may_hold_accounts_rows(encoded(Withdrawn(1, 2, 3, "INR", 100)))
    assert _may_hold_accounts_rows(encoded(accepted(), Deposited(1, 2, 3, "INR", 100)))


def test_rejections_are_decoded_for_the_seq_they_carry() -> None:
    assert _may_hold_accounts_rows(encoded(OrderRejected(4, 1, "AINR", 0, 3, "x", RejectCode.UNKNOWN_MARKET)))


def test_an_order_entry_is_skipped_unless_its_text_looks_like_one() -> None:
    assert not _may_hold_accounts_rows(encoded(accepted()))
    # a client order id that spells a tag is a false positive: decoded, then filtered (never a miss)
    assert _may_hold_accounts_rows(encoded(accepted("Deposited")))
