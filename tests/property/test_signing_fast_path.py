"""The signed-request check's fast path answers every request exactly as the general path does.

`verify_request` reads the common shape (plain pairs, ``signature`` last, all on one side)
in a few string operations and leaves everything else to the general parser. Here
hypothesis builds requests in that shape and one step off it (a value to decode, a ``+``,
a name twice or malformed, an empty pair, ``signature`` missing, doubled, empty or first,
parameters split between query and body, stale or missing timestamps, signatures valid
over the text as sent, over its decoded spelling, or over nothing) and checks that both
paths give the same ``SignedRequest`` or the same refusal (class, code and message).
"""

from __future__ import annotations

from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st

from investo.security.signing import (
    SignedRequest,
    SigningError,
    _verify_general,
    generate_key_pair,
    sign_payload,
    verify_request,
    verifying_key,
)

NOW = 1_700_000_000_000
PRIVATE, PUBLIC = generate_key_pair()
VERIFIER = verifying_key(PUBLIC)

PLAIN_NAMES = ["symbol", "side", "quantity", "price", "recvWindow", "a_1", "x"]
PLAIN_VALUES = ["BTCUSDT", "BUY", "1.5", "5000", "60001", "", "x=y", "-_.~"]
plain_pairs = st.dictionaries(st.sampled_from(PLAIN_NAMES), st.sampled_from(PLAIN_VALUES), max_size=6)
EXTRA_PAIR = {  # one pair that takes a request off the fast path's shape
    "duplicate": "timestamp=1",
    "bad name": "bad-name=1",
    "empty name": "=1",
    "no equals": "side",
    "empty pair": "",
    "percent value": "newClientOrderId=a%20b",
    "plus value": "newClientOrderId=a+b",
    "bad percent": "newClientOrderId=a%zz",
    "ampersand value": "newClientOrderId=a%26b%3D1",
    "signature twice": "signature=AAAA",
}
edits = st.sampled_from(["none"] * 8 + ["stale timestamp", "no timestamp", *EXTRA_PAIR])
signatures = st.sampled_from(["as sent"] * 4 + ["plus kept", "decoded", "garbage", "empty", "none"])


def _segments(pairs: dict[str, str], edit: str) -> list[str]:
    segments = [f"{name}={value}" for name, value in pairs.items()]
    timestamp = {"no timestamp": [], "stale timestamp": [f"timestamp={NOW - 70_000}"]}
    segments += timestamp.get(edit, [f"timestamp={NOW}"])
    return [*segments, EXTRA_PAIR[edit]] if edit in EXTRA_PAIR else segments


def _signature(kind: str, text: str) -> str | None:
    """The ``signature`` value to send, signed over ``text`` (the pairs it goes with)."""
    if kind in ("none", "empty", "garbage"):
        return {"none": None, "empty": "", "garbage": "AAAA"}[kind]
    payload = text.replace("+", " ").replace("%20", " ") if kind == "decoded" else text
    encoded = sign_payload(payload, PRIVATE)
    return encoded if kind == "plus kept" else quote(encoded, safe="")


def _outcome(query: str, body: str, *, general: bool) -> SignedRequest | tuple[type, int, str]:
    verify = _verify_general if general else verify_request
    try:
        return verify(query, body, VERIFIER, NOW)
    except SigningError as error:
        return type(error), error.code, error.msg


@settings(max_examples=800, deadline=None)
@given(plain_pairs, edits, signatures, st.sampled_from(["body", "query", "split"]), st.booleans())
def test_fast_path_and_general_path_agree(
    pairs: dict[str, str], edit: str, kind: str, where: str, signature_first: bool
) -> None:
    segments = _segments(pairs, edit)
    signature = _signature(kind, "&".join(segments))
    if signature is not None:
        pair = f"signature={signature}"
        segments = [pair, *segments] if signature_first else [*segments, pair]
    if where == "split":
        query, body = "&".join(segments[:1]), "&".join(segments[1:])
    else:
        text = "&".join(segments)
        query, body = (text, "") if where == "query" else ("", text)
    assert _outcome(query, body, general=False) == _outcome(query, body, general=True)


def test_the_common_shape_verifies() -> None:
    """ccxt's shape (plain pairs, the percent-encoded signature last) passes, signed as sent."""
    text = f"symbol=BTCUSDT&side=BUY&quantity=1&timestamp={NOW}"
    signature = quote(sign_payload(text, PRIVATE), safe="")
    request = verify_request("", f"{text}&signature={signature}", VERIFIER, NOW)
    assert request.payload == text.encode() and request.params["side"] == "BUY"
