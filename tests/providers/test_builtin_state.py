"""The builtin DNS server keeping its records in the gateway's state, on both backends.

The provider contract runs against a builtin server whose values and serial
live in the state layer (``keep_records_in``): SQLite files, and a PostgreSQL
database. On PostgreSQL a second builtin server on the same database plays
another replica: what either writes, both serve (``served`` waits until the
two agree, and fails if they never do), which is how the contract's
two-gateways case is met here. SQLite is for one process: no twin there.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import pytest
import pytest_asyncio

from gateway.config import DatabaseConfig
from gateway.state import State
from gateway.state.postgres import PostgresState
from gateway.state.sqlite import SqliteState
from providers.builtin import BuiltinProvider, BuiltinSettings
from providers.builtin.network import TcpLimits
from providers.builtin.serial import FileSerialStore
from tests.conftest import make_value
from tests.gateway.backends import BACKENDS
from tests.providers.contract import ProviderContract, Served
from tests.providers.test_builtin import txt_values
from tests.servers.postgres import PostgresServer
from tests.system import free_port

MANAGED = ("example.test", "example.org")
NAME = "_acme-challenge.example.test"

pytestmark = pytest.mark.asyncio(loop_scope="module")


def settings(port: int) -> BuiltinSettings:
    return BuiltinSettings(
        listen=(("127.0.0.1", port),),
        nameservers=("ns1.gw.example.net",),
        rate_limit_exempt=(ipaddress.ip_network("127.0.0.0/8"),),
        tcp=TcpLimits(idle_timeout=2.0, read_timeout=2.0),
    )


@contextlib.asynccontextmanager
async def builtin_on(
    state: State, port: int | None = None, serials: FileSerialStore | None = None
) -> AsyncIterator[BuiltinProvider]:
    provider = BuiltinProvider(settings(port or free_port()), MANAGED, serials)
    provider.keep_records_in(state.records)
    await provider.open()
    try:
        yield provider
    finally:
        await provider.aclose()


@contextlib.asynccontextmanager
async def opened_state(
    backend: str, folder: Path, server: PostgresServer | None, database: str | None
) -> AsyncIterator[State]:
    if backend == "sqlite":
        state: State = SqliteState(folder)
    else:
        assert server is not None and database is not None
        state = PostgresState(DatabaseConfig(server.url(database), server.password))
    await state.open()
    try:
        yield state
    finally:
        await state.close()


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def where(
    backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, PostgresServer | None, str | None]]:
    """The state's folder (SQLite), or its server and database (PostgreSQL)."""
    folder = tmp_path_factory.mktemp("state")
    if backend == "sqlite":
        yield folder, None, None
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = server.new_database()
    yield folder, server, name
    server.drop_database(name)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def replicas(
    backend: str, where: tuple[Path, PostgresServer | None, str | None]
) -> AsyncIterator[list[BuiltinProvider]]:
    """One builtin server on SQLite; on PostgreSQL two, each with a state of its own,
    as two replicas."""
    count = 2 if backend == "postgresql" else 1
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for _ in range(count):
            state = await stack.enter_async_context(opened_state(backend, *where))
            servers.append(await stack.enter_async_context(builtin_on(state)))
        yield servers


@pytest_asyncio.fixture(loop_scope="module")
async def state(
    backend: str, where: tuple[Path, PostgresServer | None, str | None]
) -> AsyncIterator[State]:
    """One more state on the replicas' files or database."""
    async with opened_state(backend, *where) as s:
        yield s


@pytest_asyncio.fixture(loop_scope="module")
async def provider(replicas: list[BuiltinProvider]) -> AsyncIterator[BuiltinProvider]:
    """The first server, emptied again after each test."""
    first = replicas[0]
    yield first
    for name, values in list(first.records.items()):
        for value in values:
            await first.remove_txt(b".".join(name).decode(), value)


@pytest.fixture
def twin_provider(replicas: list[BuiltinProvider]) -> BuiltinProvider:
    if len(replicas) < 2:
        pytest.skip("SQLite keeps the state of one process: no second replica")
    return replicas[1]


async def txt_at(port: int, fqdn: str) -> set[str]:
    """The TXT values the DNS server on 127.0.0.1:*port* serves at *fqdn*."""
    query = dns.message.make_query(fqdn + ".", "TXT")
    return txt_values(await dns.asyncquery.udp(query, "127.0.0.1", port=port, timeout=3))


@pytest.fixture
def served(replicas: list[BuiltinProvider]) -> Served:
    """What every replica serves, once they agree (10 s at most)."""

    async def read(fqdn: str) -> set[str]:
        deadline = time.monotonic() + 10
        while True:
            seen = [await txt_at(r.addresses[0][1], fqdn) for r in replicas]
            if all(s == seen[0] for s in seen) or time.monotonic() > deadline:
                assert all(s == seen[0] for s in seen), f"the replicas disagree: {seen}"
                return seen[0]
            await asyncio.sleep(0.02)

    return read


@pytest.fixture
def broken_provider() -> BuiltinProvider:
    # Serves another domain only: the contract's names are not its to publish.
    return BuiltinProvider(settings(free_port()), ("elsewhere.test",))


class TestBuiltinOnTheStateContract(ProviderContract):
    pass


async def test_values_and_serial_outlive_the_server(
    state: State, replicas: list[BuiltinProvider]
) -> None:
    value = make_value()
    await replicas[0].add_txt(NAME, value)
    serial = replicas[0].serial
    assert serial is not None
    try:
        async with builtin_on(state) as later:  # a restart, or one more replica
            assert await txt_at(later.addresses[0][1], NAME) == {value}
            assert later.serial is not None and later.serial >= serial
            await later.remove_txt(NAME, value)
            assert later.serial > serial
    finally:
        await replicas[0].remove_txt(NAME, value)


async def test_a_serial_kept_in_a_file_before_is_never_gone_back_on(
    tmp_path: Path,
) -> None:
    """STATE_DIR/builtin-serial of an earlier version: the state starts after it."""
    serials = FileSerialStore(tmp_path / "builtin-serial")
    ahead = int(time.time()) + 1_000_000
    serials.save(ahead)
    async with (
        opened_state("sqlite", tmp_path, None, None) as fresh,
        builtin_on(fresh, serials=serials) as provider,
    ):
        assert provider.serial is not None and provider.serial > ahead


async def test_a_replica_reads_everything_again_after_a_reconnect(
    backend: str,
    where: tuple[Path, PostgresServer | None, str | None],
    replicas: list[BuiltinProvider],
) -> None:
    """A change it never heard of (written behind every replica's back, as one made
    while its listening connection was down) is served once it has reconnected."""
    _, server, database = where
    if server is None or database is None:
        pytest.skip("SQLite keeps the state of one process: nothing to hear")
    twin, value = replicas[1], make_value()
    with contextlib.closing(server.connect(database)) as db:
        db.execute("INSERT INTO zone_values (name, value) VALUES (%s, %s)", (NAME, value))
        db.execute("UPDATE zone_serial SET serial = serial + 1")
        await asyncio.sleep(0.2)
        assert await txt_at(twin.addresses[0][1], NAME) == set()  # nobody told it
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND query LIKE 'LISTEN%%'",
            (database,),
        )
    try:
        deadline = time.monotonic() + 15
        while await txt_at(twin.addresses[0][1], NAME) != {value}:
            assert time.monotonic() < deadline, "not served after the reconnect"
            await asyncio.sleep(0.05)
    finally:
        await replicas[0].remove_txt(NAME, value)
