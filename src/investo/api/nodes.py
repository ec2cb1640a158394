"""What the HTTP API needs of a running Investo: one small typed interface, two implementations.

:class:`ApiNode` is everything the routers (:mod:`investo.api`) and the WebSocket API read
or call. Two classes implement it, and mypy checks both against it wherever they are passed
to :func:`investo.api.app.create_app`:

* :class:`investo.node.Node`, the embedded mode (``investo up``): the engines run in this
  process, so a book or a balance is read straight from them and ``submit`` is the engine
  host's; every read is trivially up to date.
* :class:`investo.cluster.gateway.GatewayNode`, the distributed mode (``investo gateway``):
  commands go to the shards over Redis Streams, books and balances are read from read-only
  replicas of the shards that this process follows, and the SQL history is written by the
  DB writers of the cluster.

Read-your-writes is part of the contract: a read that starts after an answer was given
(to anyone) reflects that answer. :meth:`ApiNode.sync_books` and :meth:`ApiNode.balances`
wait for the replicas (a no-op when embedded), :meth:`ApiNode.caught_up` for the SQL history.
A wait that cannot finish in time raises :class:`NotCaughtUp` (HTTP 503, -1001).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from investo.api.limits import RateLimits
from investo.core.messages import Command
from investo.host import Applied
from investo.marketdata.hub import Hub
from investo.marketdata.user import ListenKeys
from investo.markets import MarketSpec
from investo.security.signing import RequestVerifier, SignedRequest

Level = tuple[int, int]  # (price in ticks, lots)


class NotCaughtUp(RuntimeError):
    """A read could not be brought up to date in time (the engines or the DB writers lag or are down)."""


class BookView(Protocol):
    """A market's order book as the API reads it (a matching engine, or a replica's)."""

    @property
    def seq(self) -> int:
        """The update id of the book: the matching engine's event counter."""
        ...

    def depth(self, levels: int | None = None) -> tuple[list[Level], list[Level]]:
        """(bids, asks), best first, aggregated by price."""
        ...


class ApiNode(Protocol):
    """A running Investo as the API sees it; see the module docstring."""

    # ---------------------------------------------------------------- configuration

    @property
    def markets(self) -> Mapping[str, MarketSpec]: ...

    @property
    def assets(self) -> Mapping[str, int]:
        """Every asset traded, with its decimals."""
        ...

    @property
    def demo_limits(self) -> Mapping[str, int]:
        """Demo funds a user may claim per asset and day, in the asset's smallest unit."""
        ...

    @property
    def clock_ms(self) -> Callable[[], int]: ...

    @property
    def ws_buffer_limit(self) -> int:
        """Bytes a WebSocket client may leave unsent before it is dropped."""
        ...

    # set by the HTTP app
    rate_limits: RateLimits | None
    on_batch: Callable[[int, float, float], None] | None

    # ---------------------------------------------------------------- state

    @property
    def ready(self) -> bool:
        """Whether the node takes orders (recovered and connected)."""
        ...

    @property
    def db(self) -> AsyncEngine | None:
        """The SQL history (None until started)."""
        ...

    def progress(self) -> int:
        """How far the engines are: the embedded log offset, or the sum of every shard's."""
        ...

    def sql_lag(self) -> float:
        """Engine output not yet in the SQL history (entries), for the metrics."""
        ...

    async def state(self) -> dict[str, Any]:
        """``{"offset", "stateHash"}`` (plus ``"shards"`` in the distributed mode), once up to date."""
        ...

    # ---------------------------------------------------------------- commands and reads

    async def submit(self, command: Command) -> Applied:
        """Execute one command; raises HostStopped, or StatusUnknown when its fate is unknown."""
        ...

    async def sync_books(self, symbols: Iterable[str]) -> None:
        """Wait until :meth:`book` of each symbol reflects everything answered so far."""
        ...

    def book(self, symbol: str) -> BookView:
        """The book of ``symbol`` now (call :meth:`sync_books` first for read-your-writes)."""
        ...

    async def balances(self, user: int) -> dict[str, tuple[int, int]]:
        """``asset -> (free, locked)`` of ``user``, up to date."""
        ...

    async def caught_up(self, *symbols: str) -> None:
        """Wait until SQL holds everything answered so far about ``symbols`` (none: every market)."""
        ...

    async def prepare_user_stream(self, user: int) -> None:
        """Before a user stream starts: make it start after everything answered so far.

        In a cluster, the replicas of the user's accounts shard and of every matching shard
        catch up, so no earlier event shows up on the new stream as if it had just happened.
        """
        ...

    # ---------------------------------------------------------------- keys and users

    @property
    def verifier(self) -> RequestVerifier: ...

    def knows_key(self, key_id: str) -> bool:
        """Whether ``key_id`` is an active key this node has cached."""
        ...

    async def fetch_key(self, key_id: str) -> None:
        """Load ``key_id`` into the cache if SQL holds it as active (registered elsewhere)."""
        ...

    def user_of_key(self, key_id: str) -> int: ...

    def remember_key(self, key_id: str, user_id: int, pem: str) -> None: ...

    async def forget_key(self, key_id: str) -> None:
        """Stop accepting ``key_id`` here (and on every other gateway of a cluster)."""
        ...

    async def check_replay(self, key_id: str, request: SignedRequest) -> None:
        """Refuse a request another gateway of the cluster has seen (SignatureReplayed)."""
        ...

    async def submit_signed(self, command: Command, key_id: str, request: SignedRequest) -> Applied:
        """:meth:`check_replay` then :meth:`submit`, in one round trip where the node can.

        For a request verified without its replay check (``verify(..., replay_checked_by_submit=True)``):
        raises SignatureReplayed, nothing executed, if another gateway has seen it.
        """
        ...

    def demo_lock(self, user_id: int) -> AbstractAsyncContextManager[None]:
        """Held while a user's demo claim is checked and made, so the daily limit holds."""
        ...

    # ---------------------------------------------------------------- the user stream

    @property
    def hub(self) -> Hub:
        """Where stream messages are published (the user stream; market streams when embedded)."""
        ...

    @property
    def listen_keys(self) -> ListenKeys: ...

    @property
    def stream_names(self) -> Collection[str]:
        """The stream names a WebSocket client may subscribe to here."""
        ...
