"""Reading a worker's messages without a system call per message.

A worker writes each message as one frame, as
:meth:`multiprocessing.connection.Connection.send_bytes` does (a 4-byte big-endian length,
or ``-1`` and an 8-byte length for messages over 2 GiB, then the bytes); a message in
several parts (an outcome and its large result, ``messages.encode_parts``) with
:func:`write_frame`, which writes the parts one after another without joining them first.
:class:`FrameReader` drains the pipe in large non-blocking reads whenever it is readable and
hands back every whole message it brought; a partial one waits for the next read. A frame
of :data:`DIRECT` bytes or more (a large result) is read straight into a buffer of its own
size, not gathered and copied out of the reader's buffer. The pool polls all its workers'
pipes with one persistent ``poll`` object (``worker/pool.py``), so a burst of outcomes
costs a few system calls, not three each.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

#: bytes drained per :meth:`FrameReader.read`, at most (then the messages they brought)
CHUNK = 1 << 18
#: bytes asked for per system call: a pipe's default capacity
SCRATCH = 1 << 16
#: a frame at least this large is read into a buffer of its own (a bytearray)
DIRECT = 1 << 16
#: the largest frame with a 4-byte length; larger ones have -1 and an 8-byte length
_SHORT_MAX = 0x7FFFFFFF


def write_frame(fd: int, parts: Sequence[bytes]) -> None:
    """Write ``parts`` to the blocking ``fd`` as one frame (the reader sees one message),
    without copying them into one buffer first."""
    size = sum(len(p) for p in parts)
    head = struct.pack("!i", size) if size <= _SHORT_MAX else struct.pack("!iQ", -1, size)
    views = [memoryview(head), *(memoryview(p) for p in parts)]
    try:
        while views:
            n = os.writev(fd, views)  # a pipe may take less than all (a signal)
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0).release()
            if views and n:
                views[0] = views[0][n:]
    finally:
        for view in views:
            view.release()


class FrameReader:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        #: where each read lands, allocated once: a fresh bytes object a read would be a
        #: fresh mmap where the malloc threshold is low (a Dask worker's)
        self._scratch = bytearray(SCRATCH)
        #: a large frame being read straight into its own buffer, and how much is in
        self._big: bytearray | None = None
        self._filled = 0
        #: the writer closed its end (the worker exited or died)
        self.eof = False
        os.set_blocking(fd, False)

    def read(self) -> list[bytes | bytearray]:
        """Drain what the pipe holds now; return the whole messages, oldest first (a
        large one as the bytearray it was read into)."""
        scratch = self._scratch
        out: list[bytes | bytearray] = []
        read = 0
        while not self.eof and read < CHUNK:
            big = self._big
            try:
                if big is not None:
                    with memoryview(big) as view:
                        n = os.readv(self.fd, [view[self._filled :]])
                else:
                    n = os.readv(self.fd, [scratch])
            except BlockingIOError:
                break
            except OSError:
                self.eof = True
                break
            if not n:
                self.eof = True
                break
            if big is not None:
                # Not counted against CHUNK: nothing else can be handed back before it.
                self._filled += n
                if self._filled == len(big):
                    out.append(big)
                    self._big = None
                continue
            with memoryview(scratch) as view:
                self.buf += view[:n]
            read += n
            out += self._frames()
            if n < len(scratch):
                break
        return out

    def _frames(self) -> list[bytes | bytearray]:
        buf = self.buf
        out: list[bytes | bytearray] = []
        pos = 0
        view = memoryview(buf)  # a message is copied once (a slice of buf would be twice)
        try:
            while len(buf) - pos >= 4:
                (size,) = struct.unpack_from("!i", buf, pos)
                head = 4
                if size == -1:
                    if len(buf) - pos < 12:
                        break
                    (size,) = struct.unpack_from("!Q", buf, pos + 4)
                    head = 12
                if len(buf) - pos - head < size:
                    if size >= DIRECT:
                        # The rest is read straight into a buffer of the frame's size.
                        have = len(buf) - pos - head
                        big = bytearray(size)
                        big[:have] = view[pos + head :]
                        self._big, self._filled = big, have
                        pos = len(buf)
                    break
                # (A frame of DIRECT bytes or more never arrives whole: a read is smaller.)
                out.append(view[pos + head : pos + head + size].tobytes())
                pos += head + size
        finally:
            view.release()
        if pos:
            del buf[:pos]
        return out
