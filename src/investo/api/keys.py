"""The API keys a gateway accepts: ``key id -> (user id, public key)``, cached in memory.

Verifying a signature must never wait for SQL, so every node keeps the active keys it
knows in a :class:`KeyCache`. SQL is the truth: registering writes SQL first, then the
cache; revoking writes SQL first, then forgets. A node that did not register a key
itself (another gateway of a cluster did) loads it from SQL on its first use
(:meth:`KeyCache.fetch`). Keys are kept as libsodium verifiers, made once per key
(:func:`~investo.security.signing.verifying_key`). Costs: a dict lookup per request; a
fetch is one SQL query.
"""

from __future__ import annotations

from nacl.signing import VerifyKey
from sqlalchemy.ext.asyncio import AsyncEngine

from investo.security.signing import load_public_key, verifying_key
from investo.store import queries


class KeyCache:
    def __init__(self) -> None:
        self._keys: dict[str, tuple[int, VerifyKey]] = {}

    def __contains__(self, key_id: object) -> bool:
        return key_id in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def lookup(self, key_id: str) -> VerifyKey | None:
        """The public key of an active key (what the request verifier asks)."""
        found = self._keys.get(key_id)
        return None if found is None else found[1]

    def user_of(self, key_id: str) -> int:
        return self._keys[key_id][0]

    def remember(self, key_id: str, user_id: int, pem: str) -> None:
        self._keys[key_id] = (user_id, verifying_key(load_public_key(pem)))

    def forget(self, key_id: str) -> bool:
        """Forget ``key_id``; whether it was cached."""
        return self._keys.pop(key_id, None) is not None

    def key_ids(self) -> list[str]:
        return list(self._keys)

    async def load_all(self, db: AsyncEngine) -> None:
        """Cache every active key (at start)."""
        for key_id, user_id, pem in await queries.active_keys(db):
            self.remember(key_id, user_id, pem)

    async def fetch(self, db: AsyncEngine, key_id: str) -> bool:
        """Cache ``key_id`` if SQL holds it as active; whether it does."""
        found = await queries.key_lookup(db, key_id)
        if found is None:
            return False
        self.remember(key_id, *found)
        return True
