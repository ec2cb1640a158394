"""The lean Redis connection and subscriber (investo.log.resp) on the real test Redis, on both loops."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
import redis
import uvloop
from redis.exceptions import AuthenticationError, BusyLoadingError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from investo.log.resp import (
    RespConnection,
    RespSubscriber,
    _Protocol,
    encode_command,
    hot_connection,
    hot_subscriber,
)
from redis_fixtures import HOST, PORT, require_redis

LOOPS = {"asyncio": asyncio.run, "uvloop": uvloop.run}


def _run(loop: str, main: Callable[[], Awaitable[None]]) -> None:
    require_redis()
    LOOPS[loop](main())  # type: ignore[operator]


def test_commands_are_encoded_as_resp_arrays_of_bulk_strings() -> None:
    expected = b"*4\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n12\r\n$2\r\n\x00v\r\n"
    assert encode_command(("SET", "k", 12, b"\x00v")) == expected


@pytest.mark.parametrize("loop", LOOPS)
def test_answers_errors_and_overlapping_calls_in_order(loop: str) -> None:
    key = f"test-resp:{uuid.uuid4().hex}"

    async def main() -> None:
        connection = RespConnection(HOST, PORT)
        try:
            assert await connection.call("SET", key, b"v") == b"OK"
            answers = await asyncio.gather(*(connection.call("INCR", f"{key}:n") for _ in range(50)))
            assert answers == list(range(1, 51))  # each call got its own answer, in order
            with pytest.raises(ResponseError, match="WRONGTYPE"):
                await connection.call("LPUSH", key, b"x")
            assert await connection.call("GET", key) == b"v"  # still usable after an error answer
            assert await connection.call("GET", f"{key}:missing") is None
        finally:
            await connection.call("DEL", key, f"{key}:n")
            connection.close()

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_script_the_server_does_not_know_is_loaded_and_run(loop: str) -> None:
    script = f"return ARGV[1] .. '{uuid.uuid4().hex}'"  # never loaded before
    sha = hashlib.sha1(script.encode()).hexdigest()

    async def main() -> None:
        connection = RespConnection(HOST, PORT)
        try:
            assert (await connection.evalsha(sha, script, [], [b"x"])).startswith(b"x")
            assert await connection.call("SCRIPT", "EXISTS", sha) == [1]
        finally:
            connection.close()

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_killed_connection_fails_the_call_in_flight_and_the_next_call_reconnects(loop: str) -> None:
    stream = f"test-resp:{uuid.uuid4().hex}"
    name = f"resp-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        connection = RespConnection(HOST, PORT)
        admin = redis.Redis(host=HOST, port=PORT)
        try:
            await connection.call("CLIENT", "SETNAME", name)
            blocked = asyncio.ensure_future(connection.call("XREAD", "BLOCK", 5000, "STREAMS", stream, "0-0"))
            await asyncio.sleep(0.2)
            for client in admin.client_list():
                if client["name"] == name:
                    admin.client_kill_filter(_id=client["id"])
            with pytest.raises(RedisConnectionError):
                await asyncio.wait_for(blocked, 2)
            assert await connection.call("PING") == b"PONG"  # connected again
        finally:
            connection.close()
            admin.close()

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_call_past_its_timeout_drops_the_connection_and_fails(loop: str) -> None:
    stream = f"test-resp:{uuid.uuid4().hex}"

    async def main() -> None:
        connection = RespConnection(HOST, PORT, timeout_s=0.2)
        try:
            with pytest.raises(RedisConnectionError):
                await connection.call("XREAD", "BLOCK", 3000, "STREAMS", stream, "0-0")  # no answer for 3 s
            assert await connection.call("PING") == b"PONG"  # a new connection, not the late answer
        finally:
            connection.close()

    _run(loop, main)


def test_error_answers_raise_what_redis_py_raises_and_a_stray_answer_drops_the_connection() -> None:
    async def main() -> None:
        protocol = _Protocol()
        loop = asyncio.get_running_loop()
        calls = [loop.create_future() for _ in range(4)]
        protocol.pending.extend(calls)
        protocol.data_received(b"-LOADING Redis is loading\r\n-NOSCRIPT No matching script\r\n")
        protocol.data_received(b"-FENCED k is at 3\r\n:7")  # an answer cut in two reads
        protocol.data_received(b"\r\n")
        assert isinstance(calls[0].exception(), BusyLoadingError)  # a ConnectionError: callers retry it
        assert isinstance(calls[1].exception(), NoScriptError)
        assert str(calls[2].exception()) == "FENCED k is at 3"
        assert calls[3].result() == 7
        closed: list[bool] = []
        transport = type("Transport", (), {"close": lambda self: closed.append(True)})()
        protocol.transport = cast(asyncio.Transport, transport)
        protocol.data_received(b"+OK\r\n")  # nobody asked
        assert closed == [True]

    asyncio.run(main())


def test_only_plain_tcp_urls_get_a_hot_connection() -> None:
    connection = hot_connection("redis://:secret@10.0.0.5:6380/2")
    assert connection is not None
    assert (connection.host, connection.port, connection.db) == ("10.0.0.5", 6380, 2)
    assert hot_connection("rediss://10.0.0.5:6380/0") is None
    assert hot_connection("unix:///tmp/redis.sock") is None
    assert hot_subscriber("rediss://10.0.0.5:6380/0", ["c"], lambda channel, data: None) is None
    subscriber = hot_subscriber("redis://u:secret@10.0.0.5:6380/2", ["c"], lambda channel, data: None)
    assert subscriber is not None and (subscriber.host, subscriber.port) == ("10.0.0.5", 6380)


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


@pytest.mark.parametrize("loop", LOOPS)
def test_a_subscriber_hears_each_channel_in_order_and_survives_a_failing_handler(loop: str) -> None:
    async def main() -> None:
        first, second = (f"test-resp:{uuid.uuid4().hex}" for _ in range(2))
        heard: list[tuple[bytes, bytes]] = []

        def on_message(channel: bytes, data: bytes) -> None:
            if data == b"boom":
                raise ValueError("a handler that fails")
            heard.append((channel, data))

        subscriber = RespSubscriber(HOST, PORT, [first, second], on_message)
        await subscriber.start()  # confirmed: what is published now is delivered
        admin = redis.asyncio.Redis(host=HOST, port=PORT)
        try:
            for channel, data in [(first, b"1"), (second, b"2"), (first, b"boom"), (first, b"\x00\r\n3")]:
                assert await admin.publish(channel, data) == 1
            await _until(lambda: len(heard) == 3)
            assert heard == [(first.encode(), b"1"), (second.encode(), b"2"), (first.encode(), b"\x00\r\n3")]
        finally:
            await subscriber.close()
            await admin.aclose()

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_subscriber_subscribes_again_after_its_connection_is_killed(loop: str) -> None:
    async def main() -> None:
        channel = f"test-resp:{uuid.uuid4().hex}"
        heard: list[bytes] = []
        subscriber = RespSubscriber(HOST, PORT, [channel], lambda _, data: heard.append(data))
        await subscriber.start()
        admin = redis.asyncio.Redis(host=HOST, port=PORT)
        try:
            assert subscriber._protocol is not None and subscriber._protocol.transport is not None
            host, port = subscriber._protocol.transport.get_extra_info("sockname")[:2]
            killed = await admin.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}", "SKIPME", "yes")
            assert killed == 1
            receivers = 0
            for _ in range(250):  # until it has subscribed again (Redis dropped it before KILL returned)
                receivers = await admin.publish(channel, b"after")
                if receivers:
                    break
                await asyncio.sleep(0.02)
            assert receivers == 1
            await _until(lambda: heard == [b"after"])
        finally:
            await subscriber.close()
            await admin.aclose()

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_subscriber_refused_by_the_server_fails_to_start(loop: str) -> None:
    async def main() -> None:
        # the test server has no password: AUTH is an error answer, and start says so
        subscriber = RespSubscriber(HOST, PORT, ["c"], lambda channel, data: None, password="wrong")
        with pytest.raises(AuthenticationError, match="AUTH"):
            await subscriber.start()
        await subscriber.close()

    _run(loop, main)
