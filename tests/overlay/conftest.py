"""Shared by the DHT tests: one hand-moved clock, a watch on the event loop for stray task
errors, and a raw UDP socket for hostile traffic."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack
import pytest

HOST = "127.0.0.1"


class Clock:
    """One clock for every node of a network, moved by hand."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def task_errors() -> list[dict[str, Any]]:
    """Exceptions the event loop would log, e.g. "Task exception was never retrieved"."""
    return []


@pytest.fixture
async def watch_loop(task_errors: list[dict[str, Any]]) -> AsyncIterator[None]:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: task_errors.append(context))
    yield
    gc.collect()  # unretrieved task exceptions are reported when the task is collected
    await asyncio.sleep(0)
    assert task_errors == []


@pytest.fixture
def clock() -> Clock:
    return Clock()


def first_object(body: bytes) -> Any:
    """The first msgpack object of a datagram body: our nodes pad requests after it (answers.py)."""
    return next(iter(msgpack.Unpacker(io.BytesIO(body), raw=False)))


class RawPeer(asyncio.DatagramProtocol):
    """A socket speaking rpcudp's wire format by hand: type byte, 20-byte id, msgpack [name, args].

    Nodes it talks to add it to their routing tables, so it answers their requests as a node
    that holds nothing; otherwise every lookup would wait for it to time out.
    """

    def __init__(self) -> None:
        self.node_id = os.urandom(20)
        self.answers: dict[bytes, asyncio.Future[Any]] = {}
        self.answer_bytes: dict[bytes, int] = {}  # message id -> size of the answer datagram
        self.stores_received = 0
        self.pings_received = 0
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:1] == b"\x00":
            name = first_object(data[21:])[0]
            self.stores_received += name == "store"
            self.pings_received += name == "ping"
            answer = {"ping": self.node_id, "store": False}.get(name, [])
            self.send(addr, b"\x01" + data[1:21] + msgpack.packb(answer))
            return
        future = self.answers.get(data[1:21])
        self.answer_bytes[data[1:21]] = len(data)
        if future is not None and not future.done():
            future.set_result(msgpack.unpackb(data[21:], raw=False))

    @property
    def address(self) -> tuple[str, int]:
        assert self.transport is not None
        host, port = self.transport.get_extra_info("sockname")[:2]
        return (host, port)

    def send(self, address: tuple[str, int], datagram: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(datagram, address)

    def request(self, address: tuple[str, int], name: Any, args: Any, pad_to: int = 0) -> asyncio.Future[Any]:
        """Send a request, padded to `pad_to` bytes as our nodes pad theirs; its answer, when it comes."""
        msg_id = os.urandom(20)
        self.answers[msg_id] = asyncio.get_running_loop().create_future()
        datagram = b"\x00" + msg_id + msgpack.packb([name, args], use_bin_type=True)
        self.send(address, datagram + bytes(max(0, pad_to - len(datagram))))
        return self.answers[msg_id]

    async def exchange(self, address: tuple[str, int], name: str, args: Any, pad_to: int = 0) -> tuple[int, int, Any]:
        """One request and its answer: (request datagram bytes, answer datagram bytes, answer)."""
        datagram = b"\x00" + os.urandom(20) + msgpack.packb([name, args], use_bin_type=True)
        datagram += bytes(max(0, pad_to - len(datagram)))
        msg_id = datagram[1:21]
        self.answers[msg_id] = asyncio.get_running_loop().create_future()
        self.send(address, datagram)
        answer = await asyncio.wait_for(self.answers[msg_id], 5)
        return len(datagram), self.answer_bytes[msg_id], answer

    async def ping(self, address: tuple[str, int]) -> Any:
        return await asyncio.wait_for(self.request(address, "ping", [self.node_id]), 5)


@pytest.fixture
async def raw() -> AsyncIterator[RawPeer]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawPeer, local_addr=(HOST, 0))
    yield peer
    transport.close()
