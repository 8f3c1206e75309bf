"""The listening socket both simulated hosts (the pipos protocol's uvicorn server and the
ISO 8583 asyncio server) bind, with the options each needs for the same reasons."""

from __future__ import annotations

import socket

from ..errors import SimulatorError

__all__ = ["bound_socket"]


def bound_socket(bind: tuple[str, int], what: str) -> socket.socket:
    """A TCP socket bound to `bind` (port 0: any free one), not yet listening.

    proto=IPPROTO_TCP so asyncio sets TCP_NODELAY on the connections it accepts (otherwise
    Nagle and delayed ACKs add ~40 ms to every answer written in two parts); SO_REUSEADDR so
    the last listening period's connections in TIME_WAIT never keep the host from listening
    on its port again. SimulatorError names `what` when the address cannot be had."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(bind)
    except OSError as exc:
        sock.close()
        raise SimulatorError(
            f"{what} cannot listen on {bind[0]}:{bind[1]}: {exc.strerror or exc}"
        ) from exc
    return sock
