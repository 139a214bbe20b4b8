"""The chunked Singer writer on its own: records leave in chunks, a signal never splits one."""

from __future__ import annotations

import sys
from types import SimpleNamespace

from singer_sdk import singerlib as singer

from tap_closum.writer import ChunkedWriter


def test_a_signal_during_a_chunk_write_neither_repeats_nor_splits_it(monkeypatch):
    writer = ChunkedWriter()
    written: list[bytes] = []

    def write(data: bytes) -> None:
        written.append(bytes(data))
        if len(written) == 1:  # a SIGTERM lands in the middle of the first chunk
            assert writer.defer_if_writing(lambda: writer.write_message(singer.StateMessage(value={"at": "signal"})))

    monkeypatch.setattr(sys, "stdout", SimpleNamespace(buffer=SimpleNamespace(write=write), flush=lambda: None))
    for n in range(3):
        writer.write_message(singer.RecordMessage(stream="s", record={"id": n}))
    writer.flush()
    lines = b"".join(written).decode().splitlines()
    assert [line.count('"RECORD"') for line in lines] == [1, 1, 1, 0]
    assert '"signal"' in lines[-1]
