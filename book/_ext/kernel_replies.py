"""A Sphinx extension of this book: kernel replies are never missed while the chapters execute.

Now and then nbclient waits for an ``execute_reply`` that the kernel has already sent (jupyter/nbclient#312):
jupyter_client's asynchronous ``get_msg`` awaits one ``socket.poll(timeout)``, and a readiness event that
zmq reports before the poll starts is not seen again, so with no timeout the wait never ends (seen here:
kernel idle, reply sent, build stuck). This extension makes ``get_msg`` poll in slices of one second and,
after each slice, ask the socket directly (``zmq.EVENTS``) whether a message is waiting; the overall
timeout, if any, is kept. Loaded through ``sphinx.local_extensions`` in ``_config.yml``, i.e. only in the
process that builds the book.
"""

from __future__ import annotations

from queue import Empty
from time import monotonic

import zmq
from jupyter_client.channels import AsyncZMQSocketChannel

SLICE_S = 1.0


async def get_msg(self, timeout: float | None = None):
    """Like ``AsyncZMQSocketChannel.get_msg``, without missing a message that is already waiting."""
    deadline = None if timeout is None else monotonic() + timeout
    while True:
        step = SLICE_S if deadline is None else max(0.0, min(SLICE_S, deadline - monotonic()))
        ready = await self.socket.poll(int(step * 1000)) or bool(self.socket.getsockopt(zmq.EVENTS) & zmq.POLLIN)
        if ready:
            return await self._recv()
        if deadline is not None and monotonic() >= deadline:
            raise Empty


def setup(app):
    AsyncZMQSocketChannel.get_msg = get_msg
    return {"parallel_read_safe": True, "parallel_write_safe": True}
