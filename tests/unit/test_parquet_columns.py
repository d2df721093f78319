"""Parquet parts: large values are written as they are (no copy into Arrow, no dictionary,
no statistics, compressed only when they compress) and read back unchanged."""

from __future__ import annotations

import os
import pickle
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from oomguard.results.parquet import (
    LARGE_VALUE_BYTES,
    WriteOptions,
    _write_atomic,
    result_row,
    rows_to_table,
    write_options,
)

MIB = 1024 * 1024


def _part(tmp_path: Path, values: Sequence[object]) -> Path:
    rows = [
        result_row(i, 0, None, f'{{"i": {i}}}', 1, pickle.dumps(v, protocol=5), False)
        for i, v in enumerate(values)
    ]
    path = tmp_path / "part-j-00000.parquet"
    _write_atomic(rows_to_table(rows), path)
    return path


def _columns(path: Path) -> dict[str, pq.ColumnChunkMetaData]:
    group = pq.ParquetFile(path).metadata.row_group(0)
    return {group.column(i).path_in_schema: group.column(i) for i in range(group.num_columns)}


def test_large_random_values_are_written_plain_and_read_back_unchanged(tmp_path: Path) -> None:
    blobs = [os.urandom(MIB), None, os.urandom(MIB // 2)]
    path = _part(tmp_path, [{"x": i, "blob": b} for i, b in enumerate(blobs)])
    table = pq.read_table(path)
    assert table.column("blob").to_pylist() == blobs
    assert table.column("x").to_pylist() == [0, 1, 2]
    assert table.schema.field("blob").type == pa.binary()
    columns = _columns(path)
    blob = columns["blob"]
    assert blob.compression == "UNCOMPRESSED"  # random bytes: snappy would not shrink them
    assert "RLE_DICTIONARY" not in blob.encodings
    assert not blob.is_stats_set
    # Small columns keep pyarrow's defaults.
    assert columns["x"].compression == "SNAPPY"
    assert "RLE_DICTIONARY" in columns["x"].encodings
    assert columns["x"].is_stats_set


def test_large_values_that_compress_are_compressed(tmp_path: Path) -> None:
    blobs = [bytes(MIB), b"ab" * (MIB // 2)]
    path = _part(tmp_path, [{"blob": b} for b in blobs])
    assert pq.read_table(path).column("blob").to_pylist() == blobs
    blob = _columns(path)["blob"]
    assert blob.compression == "SNAPPY"
    assert blob.total_compressed_size < MIB // 4
    assert "RLE_DICTIONARY" not in blob.encodings


def test_a_result_that_is_not_a_dict_is_its_stored_pickle(tmp_path: Path) -> None:
    values: list[object] = [os.urandom(MIB), [1, 2, 3], os.urandom(10)]
    path = _part(tmp_path, values)
    stored = pq.read_table(path).column("result_pickle").to_pylist()
    assert [pickle.loads(s) for s in stored] == values
    assert stored[0] == pickle.dumps(values[0], protocol=5)  # as stored, not pickled again


def test_a_part_without_large_values_is_written_with_pyarrows_defaults() -> None:
    rows: list[dict[str, object]] = [{"b": b"ab", "s": "x" * 10}, {"b": None, "s": None}]
    table = rows_to_table(rows)
    assert table.column("b").num_chunks == 1
    assert table.column("b").to_pylist() == [b"ab", None]
    assert write_options(table) == WriteOptions(True, True, "snappy")


def test_a_column_of_large_text_gets_no_dictionary() -> None:
    table = rows_to_table([{"s": "y" * LARGE_VALUE_BYTES, "n": 1}])
    options = write_options(table)
    assert options.use_dictionary == ["n"]
    assert options.write_statistics == ["n"]
    assert options.compression == {"n": "snappy", "s": "snappy"}  # it compresses


def test_nested_columns_beside_large_values_keep_pyarrows_defaults(tmp_path: Path) -> None:
    values = [
        {"blob": os.urandom(MIB), "xs": [i, i + 1], "point": {"x": i, "y": "a"}, "t": "k"}
        for i in range(3)
    ]
    path = _part(tmp_path, values)
    table = pq.read_table(path)
    assert table.column("xs").to_pylist() == [[0, 1], [1, 2], [2, 3]]
    assert table.column("point").to_pylist() == [{"x": i, "y": "a"} for i in range(3)]
    columns = _columns(path)
    for leaf in ("xs.list.element", "point.x", "point.y", "t", "i"):
        assert columns[leaf].compression == "SNAPPY", leaf
        assert columns[leaf].is_stats_set, leaf
        assert "RLE_DICTIONARY" in columns[leaf].encodings, leaf
    assert columns["blob"].compression == "UNCOMPRESSED"
    assert not columns["blob"].is_stats_set
