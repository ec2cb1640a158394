"""Binance-style signed requests with Ed25519 keys: the server's check and the client's signer.

Guarantees (server side)
------------------------
* A request passes :func:`verify_request` only if its ``signature`` is a valid Ed25519
  signature, by the given public key, over Binance's ``totalParams``: the query string
  without its ``signature`` pair, immediately followed (no separator) by the request body
  without its ``signature`` pair. ``signature`` may travel in the query or in the body,
  exactly once; it is base64 and arrives percent-encoded, so it is percent-decoded
  (``%XX`` only; a raw ``+`` stays ``+``) and then strictly base64-decoded to 64 bytes.
* Two spellings of ``totalParams`` are accepted, tried in this order:

  1. **as sent**: the bytes on the wire, pairs kept in their order and spelling. ccxt
     signs exactly this (``tests/unit/test_signing.py`` checks it against ccxt's own
     ``sign``), and so does our :func:`sign_params`.
  2. **percent-decoded**: every key and value form-decoded (``%XX`` and ``+`` → space)
     and re-joined with ``=`` and ``&``, for clients that sign the text before encoding
     it. It is tried only when no decoded value contains ``&`` (names are limited to
     ``[A-Za-z0-9_]``), so that a decoded text stands for exactly one set of parameters
     and ``a=1%26b%3D2`` can never borrow the signature of ``a=1&b=2``.

* Time (Binance's rule, ``now_ms`` is an argument, no clock is read here): accepted iff
  ``timestamp < now_ms + 1000`` and ``now_ms - timestamp <= recvWindow``. ``timestamp``
  is mandatory (whole milliseconds); ``recvWindow`` is optional, default 5000, at most
  60000, at least 1 (whole milliseconds).
* Parameters are strict: ``name=value`` pairs joined by ``&``, names ``[A-Za-z0-9_]{1,64}``,
  values valid percent-encoded UTF-8. A name may appear once in the whole request; Binance
  lets a query value override a body value, Investo refuses the duplicate (-1101) so no
  reader can disagree about which value was signed.
* Refusals are exceptions carrying the Binance code and message (:class:`SigningError`
  and subclasses), checked in this order: parameters (-1100, -1101, -1102), recvWindow
  (-1131), time (-1021), signature (-1022). A 64-hex-digit signature (an HMAC-SHA256
  signature) is refused with the HMAC message.
* :class:`ReplayGuard` refuses a second use of an (API key, signature) pair while its
  request could still pass the time check (-1022 "Signature for this request was already
  used."); memory is bounded by time (an entry lives at most ``recvWindow + 1000`` ms,
  so at most 61 s) and by ``max_entries``, past which it fails closed (-1003).
* Investo never holds a secret able to sign for a user: only Ed25519 public keys are
  registered, an HMAC-looking secret is refused (:func:`reject_hmac_secret`), and so is a
  pasted private key.

Known limit (Binance's design): query and body are concatenated without a separator, so
moving the boundary between them does not change the signed bytes. ccxt and our client
put every parameter on one side; the replay guard refuses a second use of a signature.

Client side: :func:`sign_params` encodes like ccxt (RFC 3986, ``quote(safe="")``), signs
the encoded string and appends ``&signature=<percent-encoded base64>``; helpers make,
serialise and load keys (the PKCS#8 PEM is what ccxt takes as ``secret``).
"""

from __future__ import annotations

import base64
import binascii
import heapq
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, NamedTuple
from urllib.parse import quote, unquote_to_bytes

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

__all__ = [
    "API_KEY_HEADER",
    "DEFAULT_RECV_WINDOW_MS",
    "HMAC_NOT_SUPPORTED",
    "MAX_AHEAD_MS",
    "MAX_RECV_WINDOW_MS",
    "ApiKeyFormatInvalid",
    "ApiKeyRejected",
    "BadRecvWindow",
    "DuplicateParameter",
    "HmacNotSupported",
    "IllegalParameter",
    "InvalidSignature",
    "MissingParameter",
    "ReplayGuard",
    "RequestVerifier",
    "SignatureReplayed",
    "SignedRequest",
    "SigningError",
    "TimestampOutsideWindow",
    "TooManyRequests",
    "check_api_key",
    "encode_params",
    "generate_key_pair",
    "load_private_key",
    "load_public_key",
    "looks_like_hmac_secret",
    "private_key_to_pem",
    "public_key_to_base64",
    "public_key_to_pem",
    "reject_hmac_secret",
    "sign_params",
    "sign_payload",
    "verify_payload",
    "verify_request",
    "verifying_key",
]

API_KEY_HEADER: Final = "X-MBX-APIKEY"
DEFAULT_RECV_WINDOW_MS: Final = 5_000
MAX_RECV_WINDOW_MS: Final = 60_000
MAX_AHEAD_MS: Final = 1_000
SIGNATURE_BYTES: Final = 64
PUBLIC_KEY_BYTES: Final = 32

HMAC_NOT_SUPPORTED: Final = (
    "HMAC API keys are not supported: Investo never holds a secret that can sign for you. "
    "Register an Ed25519 public key instead."
)

_NAME = re.compile(r"[A-Za-z0-9_]{1,64}")
_MILLIS = re.compile(r"[0-9]{1,15}")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HEX_SIGNATURE = re.compile(r"[0-9A-Fa-f]{64}")
_API_KEY = re.compile(r"[A-Za-z0-9_-]{1,128}")
_HMAC_SECRET = re.compile(r"[A-Za-z0-9]{32,128}")
_HMAC_NAMES = frozenset({"HMAC", "HMAC_SHA256", "HMAC-SHA256", "HMACSHA256"})


# --- errors -------------------------------------------------------------------------


class SigningError(Exception):
    """A refused request or key, with the Binance ``code`` and ``msg`` to answer with."""

    code: int = -1000
    default_msg: str = "An unknown error occurred while processing the request."

    def __init__(self, msg: str | None = None, *, code: int | None = None) -> None:
        self.msg = msg if msg is not None else self.default_msg
        if code is not None:
            self.code = code
        super().__init__(f"{self.code}: {self.msg}")

    def to_dict(self) -> dict[str, int | str]:
        """The Binance error body: ``{"code": ..., "msg": ...}``."""
        return {"code": self.code, "msg": self.msg}


class IllegalParameter(SigningError):
    code = -1100
    default_msg = "Illegal characters found in a parameter."


class DuplicateParameter(SigningError):
    code = -1101
    default_msg = "Duplicate values for a parameter detected."


class MissingParameter(SigningError):
    code = -1102
    default_msg = "A mandatory parameter was not sent, was empty/null, or malformed."

    @classmethod
    def named(cls, name: str) -> MissingParameter:
        return cls(f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


class BadRecvWindow(SigningError):
    code = -1131
    default_msg = "recvWindow must be less than 60000."


class TimestampOutsideWindow(SigningError):
    code = -1021
    default_msg = "Timestamp for this request is outside of the recvWindow."
    ahead_msg = "Timestamp for this request was 1000ms ahead of the server's time."


class InvalidSignature(SigningError):
    code = -1022
    default_msg = "Signature for this request is not valid."


class SignatureReplayed(InvalidSignature):
    default_msg = "Signature for this request was already used."


class TooManyRequests(SigningError):
    code = -1003
    default_msg = "Too many requests queued."


class ApiKeyFormatInvalid(SigningError):
    code = -2014
    default_msg = "API-key format invalid."


class ApiKeyRejected(SigningError):
    code = -2015
    default_msg = "Invalid API-key, IP, or permissions for action."


class HmacNotSupported(SigningError):
    """An HMAC secret offered for registration (-2014) or an HMAC signature sent (-1022)."""

    code = -2014
    default_msg = HMAC_NOT_SUPPORTED


# --- parsing ------------------------------------------------------------------------


class _Pair(NamedTuple):  # a tuple: cheap to make, a dozen per signed request
    raw: str  # the segment exactly as sent, e.g. "newClientOrderId=a%20b"
    name: str  # form-decoded
    value: str  # form-decoded
    raw_value: str


def _decode(text: str, *, plus_is_space: bool) -> str:
    if "%" not in text and not (plus_is_space and "+" in text):
        return text  # nothing to decode (the common case: a quick scan, no regex, no copy)
    if _BAD_PERCENT.search(text):
        raise IllegalParameter()
    if plus_is_space:
        text = text.replace("+", " ")
    try:
        return unquote_to_bytes(text).decode("utf-8")
    except UnicodeDecodeError:
        raise IllegalParameter() from None


def _split(text: str) -> list[_Pair]:
    if text == "":
        return []
    pairs = []
    for segment in text.split("&"):
        raw_name, sep, raw_value = segment.partition("=")
        if not sep:
            raise IllegalParameter()
        name = raw_name if _NAME.fullmatch(raw_name) else _decoded_name(raw_name)
        value = _decode(raw_value, plus_is_space=True) if "%" in raw_value or "+" in raw_value else raw_value
        pairs.append(_Pair(segment, name, value, raw_value))
    return pairs


def _decoded_name(raw_name: str) -> str:
    """A percent-encoded name (rare: names are ``[A-Za-z0-9_]``, which need no encoding)."""
    name = _decode(raw_name, plus_is_space=True)
    if not _NAME.fullmatch(name):
        raise IllegalParameter()
    return name


def _take_signature(query: list[_Pair], form: list[_Pair]) -> str:
    found = [pair for pair in (*query, *form) if pair.name == "signature"]
    if len(found) > 1:
        raise DuplicateParameter()
    if not found or found[0].raw_value == "":
        raise MissingParameter.named("signature")
    signature = found[0]
    if "+" not in signature.raw_value:
        return signature.value  # decoded by _split already: "+" is the only difference
    return _decode(signature.raw_value, plus_is_space=False)


def _collect(query: list[_Pair], form: list[_Pair]) -> dict[str, str]:
    params: dict[str, str] = {}
    for pair in (*query, *form):
        if pair.name == "signature":
            continue
        if pair.name in params:
            raise DuplicateParameter()
        params[pair.name] = pair.value
    return params


def _timestamp(params: Mapping[str, str]) -> int:
    text = params.get("timestamp", "")
    if not _MILLIS.fullmatch(text):
        raise MissingParameter.named("timestamp")
    return int(text)


_ILLEGAL_RECV_WINDOW = "Illegal characters found in parameter 'recvWindow'; legal range is '1-60000'."


def _recv_window(params: Mapping[str, str]) -> int:
    text = params.get("recvWindow")
    if text is None:
        return DEFAULT_RECV_WINDOW_MS
    if not _MILLIS.fullmatch(text):
        raise IllegalParameter(_ILLEGAL_RECV_WINDOW)
    window = int(text)
    if window > MAX_RECV_WINDOW_MS:
        raise BadRecvWindow()
    if window < 1:
        raise BadRecvWindow("recvWindow must be greater than 0.")
    return window


def _check_time(timestamp: int, recv_window: int, now_ms: int) -> None:
    if timestamp >= now_ms + MAX_AHEAD_MS:
        raise TimestampOutsideWindow(TimestampOutsideWindow.ahead_msg)
    if now_ms - timestamp > recv_window:
        raise TimestampOutsideWindow()


def _signature_bytes(text: str) -> bytes:
    if _HEX_SIGNATURE.fullmatch(text):
        raise HmacNotSupported(code=InvalidSignature.code)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidSignature() from None
    if len(raw) != SIGNATURE_BYTES:
        raise InvalidSignature()
    return raw


def _as_sent(pairs: list[_Pair]) -> str:
    return "&".join(pair.raw for pair in pairs if pair.name != "signature")


def _decoded(pairs: list[_Pair]) -> str | None:
    kept = [pair for pair in pairs if pair.name != "signature"]
    if any("&" in pair.value for pair in kept):
        return None  # ambiguous once decoded: never accepted in this form
    return "&".join(f"{pair.name}={pair.value}" for pair in kept)


def _candidates(query: list[_Pair], form: list[_Pair]) -> Iterator[bytes]:
    """The spellings of ``totalParams`` to try, in order; the decoded one is built only if
    the one as sent did not verify (what honest clients send verifies first)."""
    as_sent = (_as_sent(query) + _as_sent(form)).encode()
    yield as_sent
    decoded_query, decoded_form = _decoded(query), _decoded(form)
    if decoded_query is None or decoded_form is None:
        return
    decoded = (decoded_query + decoded_form).encode()
    if decoded != as_sent:
        yield decoded


# --- verification -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """A request whose signature verified: what to execute, and the proof to keep.

    ``params`` are the decoded parameters without ``signature``; ``payload`` is the exact
    byte string the ``signature`` verified over (log both, and anyone holding the public key
    can check the request later with :func:`verify_payload`).
    """

    params: Mapping[str, str]
    timestamp: int
    recv_window: int
    signature: bytes
    payload: bytes

    @property
    def expires_ms(self) -> int:
        """The last server time (ms) at which this request still passes the time check."""
        return self.timestamp + self.recv_window


def verifying_key(public_key: Ed25519PublicKey) -> VerifyKey:
    """``public_key`` as libsodium's verifier: checking a signature costs about half of OpenSSL's.

    Keys are loaded and serialised with ``cryptography`` (PEM, SPKI); signatures are checked
    with libsodium (PyNaCl). Both implement RFC 8032 Ed25519; libsodium also refuses
    non-canonical signatures and small-order keys, which no honest signer produces.
    """
    return VerifyKey(public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


def verify_payload(payload: bytes, signature: bytes, public_key: Ed25519PublicKey | VerifyKey) -> bool:
    """Whether ``signature`` is ``public_key``'s Ed25519 signature over ``payload``."""
    key = public_key if isinstance(public_key, VerifyKey) else verifying_key(public_key)
    try:
        key.verify(payload, signature)
    except BadSignatureError:
        return False
    return True


def verify_request(
    query_string: str, body: str, public_key: Ed25519PublicKey | VerifyKey, now_ms: int
) -> SignedRequest:
    """Check a signed request as Binance does for Ed25519 keys; raise :class:`SigningError`.

    ``query_string`` is the raw text after ``?`` (no ``?``), ``body`` the raw
    ``application/x-www-form-urlencoded`` body ("" when none), ``now_ms`` the server's time.
    The common shape (:func:`_plain_signed_text`) is read in a few string operations; any
    other takes the general path. Both give the same answer to every request
    (``tests/property/test_signing_fast_path.py``).
    """
    plain = _plain_signed_text(body) if query_string == "" else None
    if plain is None:
        plain = _plain_signed_text(query_string) if body == "" else None
    if plain is not None:
        params, as_sent, signature_text = plain
        return _checked(params, signature_text, [as_sent.encode()], public_key, now_ms)
    return _verify_general(query_string, body, public_key, now_ms)


def _verify_general(
    query_string: str, body: str, public_key: Ed25519PublicKey | VerifyKey, now_ms: int
) -> SignedRequest:
    """:func:`verify_request` for any request: every pair parsed and decoded."""
    query, form = _split(query_string), _split(body)
    signature_text = _take_signature(query, form)
    return _checked(_collect(query, form), signature_text, _candidates(query, form), public_key, now_ms)


def _checked(
    params: dict[str, str],
    signature_text: str,
    payloads: Iterable[bytes],
    public_key: Ed25519PublicKey | VerifyKey,
    now_ms: int,
) -> SignedRequest:
    """The checks after parsing, in Binance's order: recvWindow, time, signature."""
    timestamp = _timestamp(params)
    recv_window = _recv_window(params)
    _check_time(timestamp, recv_window, now_ms)
    signature = _signature_bytes(signature_text)
    if not isinstance(public_key, VerifyKey):
        public_key = verifying_key(public_key)
    for payload in payloads:
        if verify_payload(payload, signature, public_key):
            return SignedRequest(MappingProxyType(params), timestamp, recv_window, signature, payload)
    raise InvalidSignature()


# Pairs whose names are well formed and whose values need no decoding (no "%", no "+").
_PLAIN_PAIRS = re.compile(r"[A-Za-z0-9_]{1,64}=[^&%+]*(?:&[A-Za-z0-9_]{1,64}=[^&%+]*)*")
_SIGNATURE_LAST = "&signature="


def _plain_signed_text(text: str) -> tuple[dict[str, str], str, str] | None:
    """``(params, totalParams as sent, signature text)`` of a query or body that holds every
    parameter, in the shape ccxt and most clients send: plain pairs (nothing to decode) and
    the ``signature`` pair last. None for any other text, which the general path reads.

    For such a text the general path finds the same: no pair to decode, so the decoded
    spelling of ``totalParams`` is the one as sent; one ``signature``; the rest in ``params``
    (a name twice is left to the general path, which refuses it).
    """
    head, found, raw_signature = text.rpartition(_SIGNATURE_LAST)
    if not found or not raw_signature or "&" in raw_signature or not _PLAIN_PAIRS.fullmatch(head):
        return None
    pairs = head.split("&")
    params = dict(pair.split("=", 1) for pair in pairs)
    if len(params) != len(pairs) or "signature" in params:  # a name twice, or a second signature
        return None
    return params, head, _decode(raw_signature, plus_is_space=False)


class ReplayGuard:
    """Remembers (API key, signature) pairs until their request expires; refuses a repeat.

    An entry is kept while ``now_ms <= timestamp + recvWindow`` (the request could still
    pass the time check), then dropped: after that the time check refuses it anyway. Keys are
    the decoded signature bytes, so re-encoding the base64 text does not make a new entry.
    Cost: O(log n) per request, memory O(requests accepted in the last 61 s), capped at
    ``max_entries`` (when full, new requests are refused with -1003: fail closed, never
    forget early). One guard per process and not thread-safe (use it from the event loop);
    several gateways need a shared store or routing by API key.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._expiry: dict[tuple[str, bytes], int] = {}
        self._heap: list[tuple[int, str, bytes]] = []

    def __len__(self) -> int:
        return len(self._expiry)

    def expire(self, now_ms: int) -> int:
        """Forget every entry whose request can no longer pass at ``now_ms``; return how many."""
        removed = 0
        while self._heap and self._heap[0][0] < now_ms:
            _, api_key, signature = heapq.heappop(self._heap)
            del self._expiry[(api_key, signature)]
            removed += 1
        return removed

    def remember(self, api_key: str, request: SignedRequest, now_ms: int) -> None:
        """Record a verified request; raise :class:`SignatureReplayed` if it was seen before."""
        self.expire(now_ms)
        entry = (api_key, request.signature)
        if entry in self._expiry:
            raise SignatureReplayed()
        if len(self._expiry) >= self._max_entries:
            raise TooManyRequests()
        self._expiry[entry] = request.expires_ms
        heapq.heappush(self._heap, (request.expires_ms, api_key, request.signature))


def check_api_key(api_key: str | None) -> str:
    """The ``X-MBX-APIKEY`` value if well formed (``[A-Za-z0-9_-]{1,128}``), else -2014."""
    if api_key is None or not _API_KEY.fullmatch(api_key):
        raise ApiKeyFormatInvalid()
    return api_key


class RequestVerifier:
    """The whole server-side check: API key format, key lookup, signature, time, replay.

    ``lookup`` maps an API key to its registered public key, or ``None`` (-2015); give it
    keys made by :func:`verifying_key` once per key, not per request.
    """

    def __init__(
        self,
        lookup: Callable[[str], Ed25519PublicKey | VerifyKey | None],
        replay_guard: ReplayGuard | None = None,
    ) -> None:
        self._lookup = lookup
        self.replay_guard = replay_guard if replay_guard is not None else ReplayGuard()

    def verify(self, api_key: str | None, query_string: str, body: str, now_ms: int) -> SignedRequest:
        key = check_api_key(api_key)
        public_key = self._lookup(key)
        if public_key is None:
            raise ApiKeyRejected()
        request = verify_request(query_string, body, public_key, now_ms)
        self.replay_guard.remember(key, request, now_ms)
        return request


# --- keys ---------------------------------------------------------------------------


def generate_key_pair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    """A fresh Ed25519 key pair (client side: the private key never leaves the client)."""
    private_key = Ed25519PrivateKey.generate()
    return private_key, private_key.public_key()


def private_key_to_pem(private_key: Ed25519PrivateKey) -> str:
    """Unencrypted PKCS#8 PEM: what ccxt takes as ``secret`` for an Ed25519 key."""
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def public_key_to_pem(public_key: Ed25519PublicKey) -> str:
    """SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``), as Binance asks for."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def public_key_to_base64(public_key: Ed25519PublicKey) -> str:
    """The raw 32-byte public key in standard base64 (the browser's WebCrypto ``raw`` export)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_private_key(pem: str | bytes, password: bytes | None = None) -> Ed25519PrivateKey:
    """Load a PKCS#8 PEM Ed25519 private key; ``ValueError`` for anything else."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 private key (got {type(key).__name__}); Investo signs with Ed25519")
    return key


def looks_like_hmac_secret(text: str) -> bool:
    """Whether ``text`` looks like an HMAC secret or key type rather than an Ed25519 public key.

    True for the key-type names (``HMAC``, ``HMAC_SHA256``) and for 32–128 ASCII letters and
    digits that are not a base64 32-byte key (Binance's HMAC keys are 64 of them; a hex
    string is refused too, since a hex key cannot be told apart from a hex secret).
    """
    stripped = text.strip()
    if stripped.upper() in _HMAC_NAMES:
        return True
    return bool(_HMAC_SECRET.fullmatch(stripped)) and _raw_public_key(stripped) is None


def reject_hmac_secret(text: str) -> None:
    """Raise :class:`HmacNotSupported` if ``text`` looks like an HMAC secret or key type."""
    if looks_like_hmac_secret(text):
        raise HmacNotSupported()


def _raw_public_key(text: str) -> bytes | None:
    if _HEX_SIGNATURE.fullmatch(text) or not text.isascii():
        return None
    padded = text + "=" * (-len(text) % 4)
    for altchars in (None, b"-_"):
        try:
            raw = base64.b64decode(padded, altchars=altchars, validate=True)
        except (binascii.Error, ValueError):
            continue
        if len(raw) == PUBLIC_KEY_BYTES:
            return raw
    return None


_PRIVATE_KEY_OFFERED = "This is a private key: keep it secret and register its public key instead."
_NOT_ED25519 = (
    "Not an Ed25519 public key: send it as PEM (-----BEGIN PUBLIC KEY-----) or as the raw 32 bytes in base64."
)


def load_public_key(text: str | bytes) -> Ed25519PublicKey:
    """Load a public key offered for registration: PEM (SPKI) or raw 32 bytes in base64.

    Refuses (:class:`SigningError`, -2014) an HMAC-looking secret with
    :data:`HMAC_NOT_SUPPORTED`, a private key (it must stay with its owner), RSA or any
    other key type, and anything else that is not an Ed25519 public key.
    """
    value = (text.decode("ascii", errors="replace") if isinstance(text, bytes) else text).strip()
    if "PRIVATE KEY" in value:
        raise ApiKeyFormatInvalid(_PRIVATE_KEY_OFFERED)
    reject_hmac_secret(value)
    if value.startswith("-----BEGIN"):
        return _load_public_pem(value)
    raw = _raw_public_key(value)
    if raw is None:
        raise ApiKeyFormatInvalid(_NOT_ED25519)
    return Ed25519PublicKey.from_public_bytes(raw)


def _load_public_pem(value: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(value.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError):
        raise ApiKeyFormatInvalid(_NOT_ED25519) from None
    if not isinstance(key, Ed25519PublicKey):
        raise ApiKeyFormatInvalid(f"Only Ed25519 public keys are accepted (got {type(key).__name__}).")
    return key


# --- client side --------------------------------------------------------------------


def _param_text(name: str, value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    kind = type(value).__name__
    raise TypeError(f"parameter {name!r}: expected str or int, got {kind} (send decimals as str)")


def encode_params(params: Mapping[str, str | int]) -> str:
    """``name=value&...`` in the mapping's order, percent-encoded per RFC 3986 (as ccxt does)."""
    parts = []
    for name, value in params.items():
        if name == "signature":
            raise ValueError("params must not contain 'signature'")
        parts.append(f"{quote(name, safe='')}={quote(_param_text(name, value), safe='')}")
    return "&".join(parts)


def sign_payload(payload: str | bytes, private_key: Ed25519PrivateKey) -> str:
    """Base64 of the Ed25519 signature over ``payload`` (str is UTF-8 encoded)."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    return base64.b64encode(private_key.sign(data)).decode("ascii")


def sign_params(params: Mapping[str, str | int], private_key: Ed25519PrivateKey) -> str:
    """The full signed query string (or form body): ``<encoded params>&signature=<encoded b64>``.

    ``params`` must include ``timestamp`` (ms); add ``recvWindow`` to widen the window.
    Send the result as the query string (GET, DELETE) or as the form body (POST, PUT).
    """
    if "timestamp" not in params:
        raise ValueError("a signed request needs a 'timestamp' parameter (milliseconds)")
    encoded = encode_params(params)
    return f"{encoded}&signature={quote(sign_payload(encoded, private_key), safe='')}"
