"""The benchmarks' lean HTTP client against a real (loopback) asyncio server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from investo.bench.http_load import HttpLoadClient, HttpLoadError

Reply = Callable[[bytes], list[bytes]]  # request bytes -> the chunks to write back


async def _serve(reply: Reply) -> tuple[asyncio.Server, int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                chunks = reply(head + await reader.readexactly(length))
                if not chunks:
                    writer.close()
                    return
                for chunk in chunks:
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0)  # separate TCP segments where the OS allows
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def echo_server() -> AsyncIterator[int]:
    """Answers every request with its body, the response split into small chunks."""

    def reply(request: bytes) -> list[bytes]:
        body = request.partition(b"\r\n\r\n")[2]
        response = b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body),
            body,
        )
        return [response[i : i + 7] for i in range(0, len(response), 7)]

    server, port = await _serve(reply)
    async with server:
        yield port


async def test_answers_arrive_in_pieces_and_in_order(echo_server: int) -> None:
    client = HttpLoadClient("127.0.0.1", echo_server, connections=2)
    await client.open()
    try:
        answers = await asyncio.gather(*(client.post_form("/x", f"n={i}") for i in range(20)))
    finally:
        client.close()
    assert answers == [(201, f"n={i}".encode()) for i in range(20)]


async def test_a_response_without_content_length_is_an_error() -> None:
    server, port = await _serve(lambda _: [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"])
    async with server:
        client = HttpLoadClient("127.0.0.1", port, connections=1)
        await client.open()
        with pytest.raises(HttpLoadError, match="Content-Length"):
            await client.post_form("/x", "a=1")
        with pytest.raises(HttpLoadError, match="Content-Length"):  # on a new connection
            await client.post_form("/x", "a=1")


async def test_a_closed_connection_fails_its_request() -> None:
    server, port = await _serve(lambda _: [])  # reads the request, then hangs up
    async with server:
        client = HttpLoadClient("127.0.0.1", port, connections=1)
        await client.open()
        with pytest.raises(HttpLoadError, match="closed"):
            await client.post_form("/x", "a=1")


async def test_connections_the_server_closed_are_dialled_again_and_no_request_is_left_waiting() -> None:
    answered = 0

    def reply(request: bytes) -> list[bytes]:
        nonlocal answered
        answered += 1
        if answered % 3 == 0:
            return []  # hang up instead of answering, as a server closing a connection does
        return [b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]

    server, port = await _serve(reply)
    async with server:
        client = HttpLoadClient("127.0.0.1", port, connections=2)
        await client.open()
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(client.post_form("/x", "a=1") for _ in range(30)), return_exceptions=True),
                10,
            )
            assert await client.post_form("/x", "a=1") == (200, b"ok")
        finally:
            client.close()
    failed = [r for r in results if isinstance(r, HttpLoadError)]
    assert len(failed) == 10 and results.count((200, b"ok")) == 20


async def test_a_request_given_up_on_never_hands_its_late_answer_to_the_next() -> None:
    """A cancelled request (the bench gives up on unanswered orders) closes its connection."""

    def reply(request: bytes) -> list[bytes]:
        body = request.partition(b"\r\n\r\n")[2]
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]

    server, port = await _serve(reply)
    async with server:
        client = HttpLoadClient("127.0.0.1", port, connections=1)
        await client.open()
        try:
            slow = asyncio.create_task(client.post_form("/x", "late=1"))
            await asyncio.sleep(0)  # written, answer not read yet
            slow.cancel()
            with pytest.raises(asyncio.CancelledError):
                await slow
            assert await client.post_form("/x", "next=2") == (200, b"next=2")
        finally:
            client.close()


async def test_callbacks_get_each_answer_once_and_abandon_gives_up_on_the_unanswered() -> None:
    """The generator's path: answers reach callbacks; requests never answered are given up on
    (``abandon``), and their connections dialled again for the next requests."""

    def reply(request: bytes) -> list[bytes]:
        body = request.partition(b"\r\n\r\n")[2]
        if body == b"hang":
            return [b""]  # read, never answered (the connection stays open)
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)]

    server, port = await _serve(reply)
    async with server:
        client = HttpLoadClient("127.0.0.1", port, connections=2)
        await client.open()
        heard: list[tuple[int, bytes, object]] = []
        try:
            for body in (b"a", b"hang", b"b", b"c"):
                request = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                client.request(request, lambda status, data, error: heard.append((status, data, error)))
            for _ in range(200):
                if len(heard) == 3:
                    break
                await asyncio.sleep(0.01)
            assert sorted(heard) == [(200, b"a", None), (200, b"b", None), (200, b"c", None)]
            assert client.abandon() == 1  # the hanging one
            await asyncio.sleep(0.05)
            assert len(heard) == 3  # an abandoned request is never called back
            assert await client.post_form("/x", "after") == (200, b"after")
            assert await client.post_form("/x", "again") == (200, b"again")
        finally:
            client.close()
