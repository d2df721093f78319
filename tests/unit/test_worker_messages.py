"""A worker's messages on the wire (``worker/messages.py``): an outcome's large result
after its tuple, in the same frame, neither copied into the pickle nor out of it."""

from __future__ import annotations

import os
import threading

import pytest

from oomguard.jobs.model import FailureClass
from oomguard.worker.frames import FrameReader, write_frame
from oomguard.worker.messages import (
    TAIL_BYTES,
    Idle,
    Outcome,
    Ready,
    Refused,
    decode,
    encode,
    encode_parts,
)


def _outcome(payload: bytes | None) -> Outcome:
    return Outcome(7, payload is not None, payload, None, None, {"elapsed_s": 0.5}, 123, None)


@pytest.mark.parametrize("size", [0, 10, TAIL_BYTES - 1])
def test_a_small_result_crosses_inside_its_message(size: int) -> None:
    outcome = _outcome(os.urandom(size))
    assert encode_parts(outcome) == (encode(outcome),)
    assert decode(encode(outcome)) == outcome


@pytest.mark.parametrize("size", [TAIL_BYTES, 3 * 1024 * 1024 + 1])
def test_a_large_result_follows_its_message_as_it_is(size: int) -> None:
    payload = os.urandom(size)
    outcome = _outcome(payload)
    head, tail = encode_parts(outcome)
    assert tail is payload  # not copied on the way out
    assert len(head) < 1024
    frame = head + tail
    for data in (frame, bytearray(frame)):  # as the reader hands it over, small or large
        back = decode(data)
        assert back == outcome
        assert isinstance(back, Outcome) and type(back.payload) is bytes


def test_every_other_message_crosses_as_before() -> None:
    failed = Outcome(8, False, None, FailureClass.ERROR, "x" * TAIL_BYTES, {}, None, None)
    for message in (Ready(1, 2), Idle(3, "rss_growth"), Refused("no"), failed):
        assert encode_parts(message) == (encode(message),)
        assert decode(encode(message)) == message


def test_a_large_result_through_a_pipe_comes_back_whole() -> None:
    r, w = os.pipe()
    reader = FrameReader(r)
    outcomes = [_outcome(os.urandom(2 * 1024 * 1024)), _outcome(b"small"), _outcome(None)]

    def write() -> None:
        for outcome in outcomes:
            write_frame(w, encode_parts(outcome))

    writer = threading.Thread(target=write)
    writer.start()
    got: list[bytes | bytearray] = []
    while len(got) < len(outcomes):
        got += reader.read()
    writer.join()
    assert [decode(data) for data in got] == outcomes
    os.close(w)
    os.close(r)
