"""Ed25519 request signing: our signer, our verifier, and ccxt's real signatures."""

from __future__ import annotations

import base64
import time
from urllib.parse import quote

import ccxt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from investo.security import signing
from investo.security.signing import (
    HMAC_NOT_SUPPORTED,
    ApiKeyFormatInvalid,
    ApiKeyRejected,
    BadRecvWindow,
    DuplicateParameter,
    HmacNotSupported,
    IllegalParameter,
    InvalidSignature,
    MissingParameter,
    ReplayGuard,
    RequestVerifier,
    SignatureReplayed,
    SignedRequest,
    SigningError,
    TimestampOutsideWindow,
    TooManyRequests,
    generate_key_pair,
    load_private_key,
    load_public_key,
    private_key_to_pem,
    public_key_to_base64,
    public_key_to_pem,
    sign_params,
    sign_payload,
    verify_payload,
    verify_request,
)

NOW = 1_700_000_000_000
ORDER: dict[str, str | int] = {
    "symbol": "TATAINR",
    "side": "BUY",
    "type": "LIMIT",
    "timeInForce": "GTC",
    "quantity": "3",
    "price": "950.05",
    "timestamp": NOW,
}


@pytest.fixture
def keys() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    return generate_key_pair()


@pytest.fixture
def private_key(keys: tuple[Ed25519PrivateKey, Ed25519PublicKey]) -> Ed25519PrivateKey:
    return keys[0]


@pytest.fixture
def public_key(keys: tuple[Ed25519PrivateKey, Ed25519PublicKey]) -> Ed25519PublicKey:
    return keys[1]


def signed_at(private_key: Ed25519PrivateKey, timestamp: int, **extra: str | int) -> str:
    return sign_params({**ORDER, "timestamp": timestamp, **extra}, private_key)


def raw_signed(payload: str, private_key: Ed25519PrivateKey, signature_encoding: str = "quote") -> str:
    """``payload`` plus a signature over ``payload``'s exact text, the signature spelled as asked."""
    b64 = sign_payload(payload, private_key)
    spelled = quote(b64, safe="") if signature_encoding == "quote" else b64
    return f"{payload}&signature={spelled}"


def check(info: pytest.ExceptionInfo[SigningError], code: int, msg: str | None = None) -> None:
    assert info.value.code == code
    if msg is not None:
        assert info.value.msg == msg
    assert info.value.to_dict() == {"code": code, "msg": info.value.msg}


# --- round trip ---------------------------------------------------------------------------


def test_round_trip_in_query(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    query = signed_at(private_key, NOW)
    request = verify_request(query, "", public_key, NOW)
    assert dict(request.params) == {k: str(v) for k, v in ORDER.items()}
    assert request.timestamp == NOW
    assert request.recv_window == 5000
    assert request.expires_ms == NOW + 5000
    assert request.payload == query.rsplit("&signature=", 1)[0].encode()
    assert verify_payload(request.payload, request.signature, public_key)


def test_round_trip_in_body(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    body = signed_at(private_key, NOW, recvWindow=10_000)
    request = verify_request("", body, public_key, NOW + 9_000)
    assert request.params["recvWindow"] == "10000"
    assert request.recv_window == 10_000


def test_sign_params_encodes_like_ccxt(private_key: Ed25519PrivateKey) -> None:
    query = sign_params(
        {"newClientOrderId": "a b/c+d~", "flag": True, "off": False, "timestamp": 5}, private_key
    )
    encoded, signature = query.split("&signature=")
    assert encoded == "newClientOrderId=a%20b%2Fc%2Bd~&flag=true&off=false&timestamp=5"
    assert "+" not in signature and "/" not in signature and "=" not in signature
    assert len(base64.b64decode(signature.replace("%2B", "+").replace("%2F", "/").replace("%3D", "="))) == 64


def test_sign_params_refuses_floats_missing_timestamp_and_signature(private_key: Ed25519PrivateKey) -> None:
    with pytest.raises(TypeError, match="price"):
        sign_params({"price": 950.05, "timestamp": NOW}, private_key)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="timestamp"):
        sign_params({"symbol": "TATAINR"}, private_key)
    with pytest.raises(ValueError, match="signature"):
        sign_params({"signature": "x", "timestamp": NOW}, private_key)


# --- bad signatures -----------------------------------------------------------------------


def test_tampered_payload_is_refused(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    query = signed_at(private_key, NOW).replace("price=950.05", "price=950.10")
    with pytest.raises(InvalidSignature) as info:
        verify_request(query, "", public_key, NOW)
    check(info, -1022, "Signature for this request is not valid.")


def test_reordered_params_are_refused(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    query = signed_at(private_key, NOW)
    pairs = query.split("&")
    reordered = "&".join([pairs[1], pairs[0], *pairs[2:]])
    with pytest.raises(InvalidSignature):
        verify_request(reordered, "", public_key, NOW)


def test_wrong_key_is_refused(private_key: Ed25519PrivateKey) -> None:
    _, other_public = generate_key_pair()
    with pytest.raises(InvalidSignature) as info:
        verify_request(signed_at(private_key, NOW), "", other_public, NOW)
    check(info, -1022)


@pytest.mark.parametrize(
    "signature",
    ["bm90IGJhc2U2NA%3D%3D", "%%%", "!!!!", base64.b64encode(b"x" * 63).decode(), "YQ"],
)
def test_malformed_signatures_are_refused(public_key: Ed25519PublicKey, signature: str) -> None:
    with pytest.raises(SigningError) as info:
        verify_request(f"timestamp={NOW}&signature={signature}", "", public_key, NOW)
    assert info.value.code in (-1022, -1100)


def test_hmac_signature_gets_the_hmac_message(public_key: Ed25519PublicKey) -> None:
    with pytest.raises(HmacNotSupported) as info:
        verify_request(f"timestamp={NOW}&signature={'ab12' * 16}", "", public_key, NOW)
    check(info, -1022, HMAC_NOT_SUPPORTED)


# --- time ---------------------------------------------------------------------------------


def test_expired_timestamp(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    verify_request(signed_at(private_key, NOW - 5000), "", public_key, NOW)  # last accepted ms
    with pytest.raises(TimestampOutsideWindow) as info:
        verify_request(signed_at(private_key, NOW - 5001), "", public_key, NOW)
    check(info, -1021, "Timestamp for this request is outside of the recvWindow.")


def test_future_timestamp(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    verify_request(signed_at(private_key, NOW + 999), "", public_key, NOW)
    with pytest.raises(TimestampOutsideWindow) as info:
        verify_request(signed_at(private_key, NOW + 1000), "", public_key, NOW)
    check(info, -1021, "Timestamp for this request was 1000ms ahead of the server's time.")


def test_recv_window_bounds(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    verify_request(signed_at(private_key, NOW - 60_000, recvWindow=60_000), "", public_key, NOW)
    verify_request(signed_at(private_key, NOW, recvWindow=1), "", public_key, NOW + 1)
    with pytest.raises(TimestampOutsideWindow):
        verify_request(signed_at(private_key, NOW - 60_001, recvWindow=60_000), "", public_key, NOW)
    with pytest.raises(BadRecvWindow) as too_big:
        verify_request(signed_at(private_key, NOW, recvWindow=60_001), "", public_key, NOW)
    check(too_big, -1131, "recvWindow must be less than 60000.")
    with pytest.raises(BadRecvWindow):
        verify_request(signed_at(private_key, NOW, recvWindow=0), "", public_key, NOW)
    for bad in ("5000.5", "-1", "abc", ""):
        with pytest.raises(IllegalParameter) as info:
            verify_request(signed_at(private_key, NOW, recvWindow=bad), "", public_key, NOW)
        check(info, -1100)


@pytest.mark.parametrize("timestamp", ["", "abc", "-5", "1.5", "1" * 16])
def test_malformed_timestamp(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, timestamp: str
) -> None:
    with pytest.raises(MissingParameter) as info:
        verify_request(sign_params({**ORDER, "timestamp": timestamp}, private_key), "", public_key, NOW)
    check(info, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")


def test_missing_timestamp(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    query = raw_signed("symbol=TATAINR", private_key)
    with pytest.raises(MissingParameter) as info:
        verify_request(query, "", public_key, NOW)
    check(info, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.")


# --- where parameters travel --------------------------------------------------------------


def test_signature_in_body_params_in_query(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    query, signature = signed_at(private_key, NOW).rsplit("&", 1)
    request = verify_request(query, signature, public_key, NOW)
    assert request.params["price"] == "950.05"


def test_signature_in_query_params_in_body(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    body, signature = signed_at(private_key, NOW).rsplit("&", 1)
    assert verify_request(signature, body, public_key, NOW).params["symbol"] == "TATAINR"


def test_signature_first_in_query(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    payload, signature = signed_at(private_key, NOW).rsplit("&", 1)
    assert verify_request(f"{signature}&{payload}", "", public_key, NOW).timestamp == NOW


def test_total_params_is_query_then_body_without_separator(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    query, body = "symbol=TATAINR&side=BUY", f"quantity=3&price=950.05&timestamp={NOW}"
    signature = quote(sign_payload(query + body, private_key), safe="")
    request = verify_request(query, f"{body}&signature={signature}", public_key, NOW)
    assert request.payload == (query + body).encode()
    assert set(request.params) == {"symbol", "side", "quantity", "price", "timestamp"}
    joined = quote(sign_payload(f"{query}&{body}", private_key), safe="")
    with pytest.raises(InvalidSignature):
        verify_request(query, f"{body}&signature={joined}", public_key, NOW)


# --- percent-encoding variants ------------------------------------------------------------


def test_signature_sent_without_percent_encoding(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    for _ in range(20):  # some signature will contain '+' or '/', every one ends in '=='
        query = raw_signed(f"symbol=TATAINR&timestamp={NOW}", private_key, signature_encoding="raw")
        assert verify_request(query, "", public_key, NOW).params["symbol"] == "TATAINR"
        private_key = generate_key_pair()[0]
        public_key = private_key.public_key()


def test_signature_with_lowercase_percent_escapes(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    payload, signature = signed_at(private_key, NOW).rsplit("&signature=", 1)
    lowered = signature.replace("%2B", "%2b").replace("%2F", "%2f").replace("%3D", "%3d")
    assert verify_request(f"{payload}&signature={lowered}", "", public_key, NOW).timestamp == NOW


def test_client_that_signs_the_decoded_text(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    decoded = f"symbol=TATAINR&newClientOrderId=my order/1+x&timestamp={NOW}"
    signature = quote(sign_payload(decoded, private_key), safe="")
    for sent in (
        f"symbol=TATAINR&newClientOrderId=my%20order%2F1%2Bx&timestamp={NOW}",
        f"symbol=TATAINR&newClientOrderId=my+order/1%2Bx&timestamp={NOW}",
    ):
        request = verify_request(sent, f"signature={signature}", public_key, NOW)
        assert request.params["newClientOrderId"] == "my order/1+x"
        assert request.payload == decoded.encode()


def test_client_that_signs_what_it_sends_with_plus_for_space(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    query = raw_signed(f"newClientOrderId=my+order&timestamp={NOW}", private_key)
    assert verify_request(query, "", public_key, NOW).params["newClientOrderId"] == "my order"


def test_a_percent_encoded_name_is_decoded(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    query = raw_signed(f"sym%62ol=TATAINR&timestamp={NOW}", private_key)
    request = verify_request(query, "", public_key, NOW)
    assert request.params["symbol"] == "TATAINR"
    assert request.payload == f"sym%62ol=TATAINR&timestamp={NOW}".encode()


def test_decoded_form_cannot_smuggle_parameters(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    signed_text = f"symbol=TATAINR&side=BUY&timestamp={NOW}"
    signature = quote(sign_payload(signed_text, private_key), safe="")
    assert verify_request(signed_text, f"signature={signature}", public_key, NOW).params["side"] == "BUY"
    smuggled = f"symbol=TATAINR%26side%3DBUY&timestamp={NOW}"  # decodes to the same text
    with pytest.raises(InvalidSignature):
        verify_request(smuggled, f"signature={signature}", public_key, NOW)


# --- malformed parameters -----------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        f"symbol&timestamp={NOW}",
        f"symbol=A&&timestamp={NOW}",
        f"symbol=A&timestamp={NOW}&",
        f"symbol=%zz&timestamp={NOW}",
        f"symbol=%ff&timestamp={NOW}",
        f"sym bol=A&timestamp={NOW}",
        f"sym%20bol=A&timestamp={NOW}",  # a name must still be [A-Za-z0-9_] once decoded
        f"=A&timestamp={NOW}",
    ],
)
def test_malformed_parameters(public_key: Ed25519PublicKey, query: str) -> None:
    with pytest.raises(IllegalParameter) as info:
        verify_request(f"{query}&signature=AAAA", "", public_key, NOW)
    check(info, -1100, "Illegal characters found in a parameter.")


def test_duplicate_parameters(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    query = signed_at(private_key, NOW)
    for request in (
        (f"symbol=ZOMATOINR&{query}", ""),  # twice in the query
        (query, "symbol=ZOMATOINR"),  # query and body (Binance would let the query win)
        (query, query.rsplit("&", 1)[1]),  # signature twice
    ):
        with pytest.raises(DuplicateParameter) as info:
            verify_request(*request, public_key, NOW)
        check(info, -1101, "Duplicate values for a parameter detected.")


def test_missing_signature(public_key: Ed25519PublicKey) -> None:
    for query in (f"timestamp={NOW}", f"timestamp={NOW}&signature="):
        with pytest.raises(MissingParameter) as info:
            verify_request(query, "", public_key, NOW)
        check(info, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.")


# --- replay -------------------------------------------------------------------------------


def test_replay_is_refused_inside_the_window_and_forgotten_after(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    guard = ReplayGuard()
    query = signed_at(private_key, NOW)
    guard.remember("k", verify_request(query, "", public_key, NOW), NOW)
    for later in (NOW, NOW + 1, NOW + 4_999, NOW + 5_000):
        request = verify_request(query, "", public_key, later)  # still inside its recvWindow
        with pytest.raises(SignatureReplayed) as info:
            guard.remember("k", request, later)
        check(info, -1022, "Signature for this request was already used.")
    assert isinstance(info.value, InvalidSignature)
    assert len(guard) == 1
    assert guard.expire(NOW + 5_001) == 1
    assert len(guard) == 0
    with pytest.raises(TimestampOutsideWindow):  # and once forgotten it can never pass again
        verify_request(query, "", public_key, NOW + 5_001)


def test_replay_with_respelled_signature_is_still_refused(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    verifier = RequestVerifier({"k": public_key}.get)
    query = signed_at(private_key, NOW)
    verifier.verify("k", query, "", NOW)
    payload, signature = query.rsplit("&signature=", 1)
    for respelled in (
        f"{payload}&signature={signature.replace('%2B', '%2b').replace('%3D', '%3d')}",
        f"signature={signature}&{payload}",
    ):
        with pytest.raises(SigningError) as info:
            verifier.verify("k", respelled, "", NOW + 10)
        assert info.value.code == -1022


def test_replay_guard_memory_is_bounded(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    guard = ReplayGuard(max_entries=3)
    requests = [verify_request(signed_at(private_key, NOW + i), "", public_key, NOW) for i in range(4)]
    for request in requests[:3]:
        guard.remember("k", request, NOW)
    with pytest.raises(TooManyRequests) as info:  # fails closed rather than forgetting early
        guard.remember("k", requests[3], NOW)
    check(info, -1003, "Too many requests queued.")
    guard.remember("k", requests[3], NOW + 5_001)  # the first one expired, making room
    assert len(guard) == 3


def test_replay_guard_keys_by_api_key(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    guard = ReplayGuard()
    request = verify_request(signed_at(private_key, NOW), "", public_key, NOW)
    guard.remember("k1", request, NOW)
    guard.remember("k2", request, NOW)
    assert len(guard) == 2


def test_many_requests_expire_in_time_order(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    guard = ReplayGuard()
    for i in range(50):
        request = verify_request(
            signed_at(private_key, NOW + i, recvWindow=1000 + 10 * i), "", public_key, NOW
        )
        guard.remember("k", request, NOW)
    assert guard.expire(NOW + 1_000 + 11 * 25 + 1) == 26  # expires_ms = NOW + 1000 + 11 i
    assert len(guard) == 24


# --- API keys and the verifier -----------------------------------------------------------


def test_request_verifier(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    verifier = RequestVerifier({"my-key_1": public_key}.get)
    query = signed_at(private_key, NOW)
    for api_key in (None, "", "bad key", "k" * 129, "ключ"):
        with pytest.raises(ApiKeyFormatInvalid) as bad_format:
            verifier.verify(api_key, query, "", NOW)
        check(bad_format, -2014, "API-key format invalid.")
    with pytest.raises(ApiKeyRejected) as unknown:
        verifier.verify("other", query, "", NOW)
    check(unknown, -2015, "Invalid API-key, IP, or permissions for action.")
    assert isinstance(verifier.verify("my-key_1", query, "", NOW), SignedRequest)
    with pytest.raises(SignatureReplayed):
        verifier.verify("my-key_1", query, "", NOW + 1)


# --- keys ---------------------------------------------------------------------------------


def test_private_key_pem_round_trip(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    pem = private_key_to_pem(private_key)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    loaded = load_private_key(pem)
    assert verify_request(sign_params({"timestamp": NOW}, loaded), "", public_key, NOW).timestamp == NOW
    assert load_private_key(pem.encode()).public_key() == public_key


def test_load_private_key_refuses_other_keys() -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="Ed25519"):
        load_private_key(ec_pem)
    with pytest.raises(ValueError, match="PEM"):
        load_private_key("not a key")


def test_public_key_formats(public_key: Ed25519PublicKey) -> None:
    pem = public_key_to_pem(public_key)
    raw_b64 = public_key_to_base64(public_key)
    raw = base64.b64decode(raw_b64)
    assert pem.startswith("-----BEGIN PUBLIC KEY-----")
    assert len(raw) == 32
    for text in (pem, f"  {pem}\n", raw_b64, base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        assert load_public_key(text) == public_key


def test_load_public_key_refuses_private_keys_and_other_types(private_key: Ed25519PrivateKey) -> None:
    with pytest.raises(ApiKeyFormatInvalid, match="private key"):
        load_public_key(private_key_to_pem(private_key))
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_pem = ec_public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(ApiKeyFormatInvalid, match="Only Ed25519") as info:
        load_public_key(ec_pem)
    assert info.value.code == -2014
    for junk in ("", "hello", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----", "é" * 44):
        with pytest.raises(ApiKeyFormatInvalid, match="Not an Ed25519 public key"):
            load_public_key(junk)


@pytest.mark.parametrize(
    "secret",
    [
        "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",  # Binance-shaped HMAC key
        "0123456789abcdef" * 4,  # hex secret
        "HMAC_SHA256",
        "hmac",
    ],
)
def test_hmac_registration_is_refused(secret: str) -> None:
    assert signing.looks_like_hmac_secret(secret)
    with pytest.raises(HmacNotSupported) as info:
        load_public_key(secret)
    assert str(info.value.msg) == (
        "HMAC API keys are not supported: Investo never holds a secret that can sign for you. "
        "Register an Ed25519 public key instead."
    )
    with pytest.raises(HmacNotSupported):
        signing.reject_hmac_secret(secret)


def test_ed25519_public_key_is_not_mistaken_for_hmac(public_key: Ed25519PublicKey) -> None:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    for text in (public_key_to_pem(public_key), public_key_to_base64(public_key)):
        assert not signing.looks_like_hmac_secret(text)
        signing.reject_hmac_secret(text)
    unpadded = base64.b64encode(raw).decode().rstrip("=")
    assert load_public_key(unpadded) == public_key


# --- the real client: ccxt ----------------------------------------------------------------


def ccxt_exchange(secret: str, recv_window: int | None = None) -> ccxt.binance:
    exchange = ccxt.binance({"apiKey": "investo-test-key", "secret": secret})
    if recv_window is not None:
        exchange.options["recvWindow"] = recv_window
    return exchange


def ccxt_verifier(public_key: Ed25519PublicKey) -> RequestVerifier:
    return RequestVerifier({"investo-test-key": public_key}.get)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_ccxt_post_order_signature_verifies(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey
) -> None:
    exchange = ccxt_exchange(private_key_to_pem(private_key), recv_window=7_000)
    params = {
        "symbol": "TATAINR",
        "side": "BUY",
        "type": "LIMIT",
        "timeInForce": "GTC",
        "quantity": "3",
        "price": "950.05",
        "newClientOrderId": "bot 1/a+b=c",  # needs percent-encoding
    }
    request = exchange.sign(path="order", api=["private"], method="POST", params=params)
    assert request["url"].endswith("/order")  # POST: everything in the form body
    assert request["headers"]["Content-Type"] == "application/x-www-form-urlencoded"
    body = request["body"]
    assert "&signature=" in body

    signed = ccxt_verifier(public_key).verify(request["headers"]["X-MBX-APIKEY"], "", body, now_ms())

    # ccxt signs the urlencoded string exactly as sent, without the signature pair.
    assert signed.payload == body.rsplit("&signature=", 1)[0].encode()
    assert signed.params["newClientOrderId"] == "bot 1/a+b=c"
    assert signed.params["price"] == "950.05"
    assert signed.recv_window == 7_000
    with pytest.raises(InvalidSignature):
        verify_request("", body.replace("quantity=3", "quantity=4"), public_key, now_ms())


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_ccxt_query_signature_verifies(
    private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey, method: str
) -> None:
    exchange = ccxt_exchange(private_key_to_pem(private_key))
    request = exchange.sign(
        path="order", api=["private"], method=method, params={"symbol": "TATAINR", "orderId": "12"}
    )
    assert request["body"] is None
    _, query = request["url"].split("?", 1)
    signed = ccxt_verifier(public_key).verify(request["headers"]["X-MBX-APIKEY"], query, "", now_ms())
    assert signed.params["orderId"] == "12"
    assert signed.payload == query.rsplit("&signature=", 1)[0].encode()


def test_ccxt_with_a_fixed_timestamp(private_key: Ed25519PrivateKey, public_key: Ed25519PublicKey) -> None:
    exchange = ccxt_exchange(private_key_to_pem(private_key), recv_window=60_000)
    request = exchange.sign(
        path="account", api=["private"], method="GET", params={"timestamp": NOW, "omitZeroBalances": True}
    )
    _, query = request["url"].split("?", 1)
    signed = verify_request(query, "", public_key, NOW + 60_000)
    assert signed.params["omitZeroBalances"] == "true"
    with pytest.raises(TimestampOutsideWindow):
        verify_request(query, "", public_key, NOW + 60_001)


def test_ccxt_with_an_hmac_secret_gets_the_hmac_message(public_key: Ed25519PublicKey) -> None:
    exchange = ccxt_exchange("vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A")
    request = exchange.sign(path="order", api=["private"], method="POST", params={"symbol": "TATAINR"})
    with pytest.raises(HmacNotSupported) as info:
        verify_request("", request["body"], public_key, now_ms())
    check(info, -1022, HMAC_NOT_SUPPORTED)
