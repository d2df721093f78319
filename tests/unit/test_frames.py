"""FrameReader: a worker's messages read in large non-blocking reads, whole ones only."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from oomguard.worker.frames import CHUNK, DIRECT, FrameReader, write_frame


def test_many_messages_come_back_whole_and_in_order() -> None:
    r, w = os.pipe()
    reader = FrameReader(r)
    out = Connection(w, readable=False)
    sent = [b"", b"x" * 10, os.urandom(5000)] + [str(i).encode() for i in range(200)]
    for m in sent:
        out.send_bytes(m)
    assert reader.read() == sent
    assert reader.read() == []  # nothing more: no blocking, nothing invented
    assert not reader.eof
    out.close()
    assert reader.read() == [] and reader.eof
    os.close(r)


def _read_while(reader: FrameReader, write: Callable[[], None], n: int) -> list[bytes | bytearray]:
    """The first ``n`` messages ``reader`` reads while ``write`` runs on a thread (it may
    write more than the pipe holds)."""
    writer = threading.Thread(target=write)
    writer.start()
    got: list[bytes | bytearray] = []
    while len(got) < n:
        got += reader.read()
    writer.join()
    return got


def test_a_message_larger_than_a_read_and_than_the_pipe_is_assembled() -> None:
    r, w = os.pipe()
    reader = FrameReader(r)
    big = os.urandom(3 * CHUNK + 17)
    out = Connection(w, readable=False)

    def write() -> None:
        out.send_bytes(big)
        out.send_bytes(b"after")

    got = _read_while(reader, write, 2)
    assert got == [big, b"after"]
    out.close()
    os.close(r)


def test_a_partial_frame_waits_for_the_rest() -> None:
    r, w = os.pipe()
    reader = FrameReader(r)
    frame = (5).to_bytes(4, "big") + b"hello"
    os.write(w, frame[:6])
    assert reader.read() == []
    os.write(w, frame[6:])
    assert reader.read() == [b"hello"]
    os.close(w)
    os.close(r)


def test_a_frame_in_parts_is_one_message_and_a_large_one_is_read_into_its_own_buffer() -> None:
    r, w = os.pipe()
    reader = FrameReader(r)
    head, tail = b"head", os.urandom(3 * CHUNK + 5)  # larger than a read, than the pipe

    def write() -> None:
        write_frame(w, (head, tail))
        write_frame(w, (b"small",))

    got = _read_while(reader, write, 2)
    assert got == [head + tail, b"small"]
    # Read straight into a buffer of the frame's size, handed over as it is.
    assert type(got[0]) is bytearray and type(got[1]) is bytes
    assert len(got[0]) >= DIRECT
    os.close(w)
    os.close(r)
