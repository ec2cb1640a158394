"""One bot's account: its own Ed25519 key, registration, demo funds, and calls that survive errors.

Behaviour
---------
* A bot is an ordinary user: it makes a key, registers ``<role>-<SYMBOL>-<n>-<random>`` and
  claims demo funds through :class:`investo.client.InvestoClient`, like any client would.
* With a ``state_dir``, the identity (name, API key, private key PEM) is kept in
  ``<state_dir>/<role>-<SYMBOL>-<n>.json`` (mode 0600) and reused on the next start, so a
  restarted fleet finds and cancels the orders its previous run left in the book.
* :meth:`BotUser.call` never raises for the API's or the network's sake:

  - an API error answer (HTTP 4xx with a Binance code) is logged at debug; the call gives None;
  - HTTP 429 / ``-1003`` sleeps for ``Retry-After`` (1 s when absent), then gives None;
  - a connection error or a 5xx sleeps with exponential back-off (0.2 s doubling to 10 s,
    reset by the next success), then gives None, or tries again with ``retry=True``.

  Only cancellation (and programming errors) propagate.
* Demo funds are claimed at most once per ``claim_interval_s`` when a bot asks, and again
  whenever the UTC day has changed since the last claim (the daily limit refills).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx

from investo.client import ApiError, InvestoClient
from investo.security.signing import generate_key_pair, load_private_key, private_key_to_pem

log = logging.getLogger("investo.bots")
T = TypeVar("T")

DAY_S = 86_400
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 10.0
RATE_LIMITED = -1003


class BotUser:
    """The account and API access of one bot (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        label: str,
        *,
        state_dir: Path | None = None,
        claim_interval_s: float = 60.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.label = label  # e.g. "mm-TATAINR-1"
        self.name = ""
        self.state_path = None if state_dir is None else state_dir / f"{label}.json"
        self.claim_interval_s = claim_interval_s
        self.client = InvestoClient(base_url, http=http)
        self.backoff_s = BACKOFF_FIRST_S
        self.last_claim = -float("inf")  # time.monotonic() of the last claim
        self.last_claim_day = -1
        self.errors = 0  # API error answers seen (for tests and diagnostics)
        self.last_error: ApiError | None = None  # the last API error answer of `call`
        self.reused = False  # True when the identity came from state_dir

    async def close(self) -> None:
        await self.client.close()

    # ------------------------------------------------------------------ resilient calls

    async def call(self, what: str, make: Callable[[], Awaitable[T]], *, retry: bool = False) -> T | None:
        """``await make()``, or None after logging and backing off (see the module docstring)."""
        while True:
            try:
                result = await make()
            except ApiError as error:
                if error.status == 429 or error.code == RATE_LIMITED:
                    wait = error.retry_after if error.retry_after is not None else 1.0
                    log.debug("%s %s: rate limited, waiting %.1f s", self.label, what, wait)
                    await asyncio.sleep(wait)
                elif error.status >= 500:
                    await self._back_off(what, error)
                else:
                    self.errors += 1
                    self.last_error = error
                    log.debug("%s %s: %s", self.label, what, error)
                    return None
            except (httpx.TransportError, OSError) as error:
                await self._back_off(what, error)
            else:
                self.backoff_s = BACKOFF_FIRST_S
                return result
            if not retry:
                return None

    async def _back_off(self, what: str, error: Exception) -> None:
        log.debug("%s %s: %r, retrying in %.1f s", self.label, what, error, self.backoff_s)
        await asyncio.sleep(self.backoff_s)
        self.backoff_s = min(self.backoff_s * 2, BACKOFF_MAX_S)

    # ------------------------------------------------------------------ identity and funds

    async def setup(self) -> None:
        """Reuse the stored identity if the exchange still knows it, else register a new one.

        Idempotent: once registered, later calls do nothing.
        """
        if self.client.api_key is not None:
            return
        if self.state_path is not None and self.state_path.exists():
            try:
                saved = json.loads(self.state_path.read_text())
                self.client.private_key = load_private_key(saved["privateKey"])
                self.client.api_key = str(saved["apiKey"])
                self.name = str(saved["name"])
            except (OSError, ValueError, KeyError) as error:
                log.debug("%s: cannot reuse %s: %r", self.label, self.state_path, error)
            else:
                if await self.call("account", self.client.account, retry=True) is not None:
                    self.reused = True
                    return
        self.client.private_key = generate_key_pair()[0]
        self.client.api_key = None
        while True:
            self.name = f"{self.label}-{secrets.token_hex(3)}"
            if await self.call("register", lambda: self.client.register(self.name), retry=True):
                break
            await asyncio.sleep(BACKOFF_MAX_S / 20)  # refused (a taken name?): try another name
        self._save()
        await self.claim(force=True)

    def _save(self) -> None:
        if self.state_path is None or self.client.private_key is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        saved = {
            "name": self.name,
            "apiKey": self.client.api_key,
            "privateKey": private_key_to_pem(self.client.private_key),
        }
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved))
        tmp.chmod(0o600)
        tmp.replace(self.state_path)

    def claim_due(self) -> bool:
        """Whether a claim now would be the first of a new UTC day."""
        return int(time.time()) // DAY_S != self.last_claim_day

    async def claim(self, *, force: bool = False) -> list[dict[str, str]]:
        """Claim what is left of today's demo funds (rate limited unless ``force`` or a new day)."""
        now = time.monotonic()
        if not (force or self.claim_due() or now - self.last_claim >= self.claim_interval_s):
            return []
        self.last_claim = now
        self.last_claim_day = int(time.time()) // DAY_S
        answer = await self.call("claim demo funds", self.client.claim_demo_funds)
        deposits: list[dict[str, str]] = [] if answer is None else list(answer.get("deposits", []))
        if deposits:
            log.debug("%s claimed %s", self.label, deposits)
        return deposits

    async def balances(self) -> dict[str, tuple[Decimal, Decimal]] | None:
        """``asset -> (free, locked)`` as exact decimals, or None if the account could not be read."""
        account: Any = await self.call("account", self.client.account)
        if account is None:
            return None
        return {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in account.get("balances", [])}
