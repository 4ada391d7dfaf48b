"""The registered acme-dns accounts as each state backend keeps them
(:class:`gateway.acmedns.AccountTable`): listed oldest first, with their
registrant and creation time; a new key replaces the old one; and the
per-registrant cap is one step with the insert, also for two gateways on one
database inserting at the same instant.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.acmedns import Account, AccountStore, check_key, hash_key
from gateway.config import parse_network
from gateway.state import State
from gateway.state.sqlite import SqliteState
from tests.gateway.backends import (
    Backend,
    both_backends,  # noqa: F401 (a fixture)
)

ZONE = "acme.example.test"


def account(n: int, owner: str, created: float) -> Account:
    return Account(
        f"user-{n}", hash_key(f"key-{n}"), f"sub-{n}", f"sub-{n}.{ZONE}",
        (parse_network("192.0.2.0/24"),), owner, created,
    )


@asynccontextmanager
async def opened(backend: Backend) -> AsyncIterator[State]:
    state = backend.state()
    await state.open()
    try:
        yield state
    finally:
        await state.close()


async def test_accounts_are_listed_oldest_first_with_owner_and_creation_time(
    backend: Backend,
) -> None:
    async with opened(backend) as state:
        table = state.accounts
        two, one, three = account(2, "carol", 200.0), account(1, "alice", 100.0), account(
            3, "carol", 300.0
        )
        for each in (two, one, three):
            assert await table.insert(each)
        assert await table.all() == [one, two, three]
        assert await table.all("carol") == [two, three]
        assert await table.all("nobody") == []
        assert await table.get("user-3") == three


async def test_a_new_key_replaces_the_old_one(backend: Backend) -> None:
    async with opened(backend) as state:
        store = AccountStore(state.accounts)
        registered = await store.register("carol", ZONE, None, ())
        assert registered is not None
        first, old_key = registered
        rotated = await store.rotate(first.username)
        assert rotated is not None
        again, new_key = rotated
        assert new_key != old_key and len(new_key) == 40
        assert await store.verify(first.username, old_key) is None
        assert await store.verify(first.username, new_key) == again
        assert (again.fqdn, again.subdomain, again.owner, again.created) == (
            first.fqdn, first.subdomain, "carol", first.created,
        )
        # Only a hash is kept.
        stored = await state.accounts.get(first.username)
        assert stored is not None and check_key(new_key, stored.key_hash)
        assert new_key not in repr(backend.sql("accounts", "SELECT * FROM accounts"))
        assert await store.rotate("no-such-account") is None
        assert not await state.accounts.set_key("no-such-account", hash_key("x"))


async def test_a_pre_registered_account_is_not_rotated_here(backend: Backend) -> None:
    async with opened(backend) as state:
        store = AccountStore(state.accounts)
        store.set_static([Account("static", hash_key("k"), "s", f"s.{ZONE}", (), "file")])
        assert await store.rotate("static") is None
        assert await store.verify("static", "k") is not None
        assert [a.username for a in await store.all()] == ["static"]
        assert await store.all("carol") == []


async def test_the_cap_counts_the_owners_accounts(backend: Backend) -> None:
    async with opened(backend) as state:
        store = AccountStore(state.accounts)
        for _ in range(2):
            assert await store.register("carol", ZONE, None, (), limit=2) is not None
        assert await store.register("carol", ZONE, None, (), limit=2) is None
        assert await store.count_owned("carol") == 2
        # Others have caps of their own; 0 is no cap.
        assert await store.register("dave", ZONE, None, (), limit=2) is not None
        assert await store.register("carol", ZONE, None, ()) is not None


def slow_inserts(backend: Backend, states: list[State]) -> None:
    """Make every account insert take half a second after its statement began."""
    if backend.postgres is None:
        # SQLite cannot sleep in a trigger: each connection gets a function that does.
        for state in states:
            assert isinstance(state, SqliteState)
            state.accounts._connection().create_function("pause", 0, lambda: time.sleep(0.5))
        backend.sql(
            "accounts",
            "CREATE TRIGGER slow BEFORE INSERT ON accounts BEGIN SELECT pause(); END",
        )
        return
    backend.sql(
        "accounts",
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$",
    )
    backend.sql(
        "accounts",
        "CREATE TRIGGER slow BEFORE INSERT ON accounts FOR EACH ROW EXECUTE FUNCTION slow()",
    )


async def test_two_gateways_registering_at_once_cannot_both_take_the_last_place(
    backend: Backend,
) -> None:
    """Two states on one database (two replicas, or two processes on one STATE_DIR),
    each inserting an account for carol while the other's insert is under way."""
    async with opened(backend) as a, opened(backend) as b:
        assert await a.accounts.insert(account(0, "carol", 1.0), limit=2)
        slow_inserts(backend, [a, b])

        async def insert(state: State, n: int) -> bool:
            if backend.postgres is None:
                # SQLite calls block: each gateway in a thread of its own, as two processes.
                return await asyncio.to_thread(
                    asyncio.run, state.accounts.insert(account(n, "carol", 2.0), limit=2)
                )
            return await state.accounts.insert(account(n, "carol", 2.0), limit=2)

        taken = await asyncio.gather(insert(a, 1), insert(b, 2))
        assert sorted(taken) == [False, True]
        assert await a.accounts.count_owned("carol") == 2
