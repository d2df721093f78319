"""A group's answer as distributed pickles it: large results out of band (protocol 5 with
a buffer callback, a Dask worker to the executor's client), in band otherwise; bytes
again on the other side either way."""

from __future__ import annotations

import os
import pickle

from oomguard.executors.dask.remote.answers import OUT_OF_BAND_BYTES, GroupAnswer, Outcome


def _answer() -> GroupAnswer:
    big = Outcome(1, True, os.urandom(OUT_OF_BAND_BYTES), None, None, {"elapsed_s": 0.1}, 7, 42)
    small = Outcome(2, True, b"small", None, None, {}, None, 42)
    failed = Outcome(3, False, None, "error", "ValueError: x", {"traceback": "..."}, 5, 42)
    return GroupAnswer("tcp://w", 41, (big, small, failed, Outcome.requeued(4)))


def test_a_large_result_leaves_out_of_band_and_comes_back_as_the_same_bytes() -> None:
    answer = _answer()
    buffers: list[pickle.PickleBuffer] = []
    data = pickle.dumps(answer, protocol=5, buffer_callback=buffers.append)
    # Only the large payload went out of band, as the very bytes object (not a copy).
    assert len(buffers) == 1
    with buffers[0].raw() as view:
        assert view.obj is answer.outcomes[0].payload
    assert len(data) < OUT_OF_BAND_BYTES
    # As distributed hands the frames back: views of what was received.
    frames = [memoryview(bytearray(b.raw())) for b in buffers]
    back = pickle.loads(data, buffers=frames)
    assert back == answer
    assert all(type(o.payload) is bytes for o in back.outcomes if o.payload is not None)


def test_without_a_buffer_callback_or_before_protocol_5_everything_is_in_band() -> None:
    answer = _answer()
    for protocol in (4, 5):
        back = pickle.loads(pickle.dumps(answer, protocol=protocol))
        assert back == answer
        assert type(back.outcomes[0].payload) is bytes
