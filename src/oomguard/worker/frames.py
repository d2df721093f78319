"""Reading a worker's messages without a system call per message.

A worker writes its messages with :meth:`multiprocessing.connection.Connection.send_bytes`
(a 4-byte big-endian length, or ``-1`` and an 8-byte length for messages over 2 GiB, then
the bytes). :class:`FrameReader` drains the pipe in large non-blocking reads whenever it is
readable and hands back every whole message it brought; a partial one waits for the next
read. The pool polls all its workers' pipes with one persistent ``poll`` object
(``worker/pool.py``), so a burst of outcomes costs a few system calls, not three each.
"""

from __future__ import annotations

import os
import struct

#: bytes drained per :meth:`FrameReader.read`, at most (then the messages they brought)
CHUNK = 1 << 18
#: bytes asked for per system call: a pipe's default capacity
SCRATCH = 1 << 16


class FrameReader:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = bytearray()
        #: where each read lands, allocated once: a fresh bytes object a read would be a
        #: fresh mmap where the malloc threshold is low (a Dask worker's)
        self._scratch = bytearray(SCRATCH)
        #: the writer closed its end (the worker exited or died)
        self.eof = False
        os.set_blocking(fd, False)

    def read(self) -> list[bytes]:
        """Drain what the pipe holds now; return the whole messages, oldest first."""
        scratch = self._scratch
        read = 0
        while not self.eof and read < CHUNK:
            try:
                n = os.readv(self.fd, [scratch])
            except BlockingIOError:
                break
            except OSError:
                self.eof = True
                break
            if not n:
                self.eof = True
                break
            with memoryview(scratch) as view:
                self.buf += view[:n]
            read += n
            if n < len(scratch):
                break
        return self._frames()

    def _frames(self) -> list[bytes]:
        buf = self.buf
        out = []
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
                    break
                out.append(view[pos + head : pos + head + size].tobytes())
                pos += head + size
        finally:
            view.release()
        if pos:
            del buf[:pos]
        return out
