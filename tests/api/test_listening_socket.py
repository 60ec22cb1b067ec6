from __future__ import annotations

import asyncio
import socket

import pytest

from api.server import listening_socket

pytestmark = pytest.mark.api


def test_connections_accepted_on_the_shared_socket_send_without_delay() -> None:
    """`serve --processes` serves a socket it made itself; the connections asyncio accepts on it
    must have TCP_NODELAY, or every response's second write waits for the client's delayed ACK."""

    async def accept_one() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        def on_connect(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        listener = listening_socket("127.0.0.1", 0)
        server = await asyncio.start_server(on_connect, sock=listener)
        async with server:
            port = listener.getsockname()[1]
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            nodelay = await asyncio.wait_for(accepted, 5)
            writer.close()
        return nodelay

    assert asyncio.run(accept_one()) != 0
