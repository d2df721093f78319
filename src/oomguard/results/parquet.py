"""The result sink: Parquet part files written as results arrive, exactly once.

``OUT/tasks/part-JOB-NNNNN.parquet`` and ``OUT/aggregates/part-JOB-NNNNN.parquet``: each
job's parts are named by its id, so jobs sharing an ``out`` never write over each other's
rows (``pyarrow.dataset.dataset(OUT / "tasks")`` reads them all). Which rows
make a part is committed to the store *before* the file is written (temporary file, then
rename), so a part lost to a crash is rewritten with the same rows on the next start, and
no row is ever in two parts.

Row columns: ``task_id``, ``group``, the task's parameters, ``replicate`` (tasks of a sweep
with replicates), ``attempts``, then the result: a ``dict`` result becomes one column per
key (``result.KEY`` where a key collides with a parameter); a scalar (``int``, ``float``,
``str``, ``bool``, ``None``) is a ``result`` column; any other value is stored pickled
(the pickle the store keeps) in a ``result_pickle`` binary column. A column of large
values is written as they are (:func:`write_options`).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import struct
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from oomguard.errors import BlobMissingError, OutputError
from oomguard.units import safe_text

if TYPE_CHECKING:
    import pyarrow as pa

    from oomguard.config import RunnerConfig
    from oomguard.store.protocol import Store

log = logging.getLogger("oomguard.results")

_SCALARS = (int, float, str, bool, type(None))
KIND_DIR = {"task": "tasks", "aggregate": "aggregates"}


def check_out_dir(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise OutputError(f"output directory {str(path)!r} is a file", out=str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputError(f"cannot create output directory {str(path)!r}: {err}") from err
    if not os.access(path, os.W_OK):
        raise OutputError(f"output directory {str(path)!r} is not writable", out=str(path))
    return path


#: a row's own columns: a task parameter of one of these names is written as ``param.NAME``
RESERVED_COLUMNS = (
    "task_id",
    "group",
    "replicate",
    "attempts",
    "params_error",
    "result",
    "result_pickle",
    "result_error",
)


def result_row(
    task_id: int,
    grp: int,
    replicate: int | None,
    params: str | BlobMissingError | None,
    attempts: int,
    value: bytes | BlobMissingError | None,
    with_replicate: bool,
) -> dict[str, object]:
    """One row of a results table: identity, parameters (the user's), result or why not."""
    row: dict[str, object] = {"task_id": task_id, "group": grp}
    if isinstance(params, BlobMissingError):
        row["params_error"] = str(params)
    else:
        p = json.loads(params) if params else {}
        if isinstance(p, dict):
            # A parameter never overwrites the row's identity (task_id, group, ...).
            row.update({f"param.{k}" if k in RESERVED_COLUMNS else k: v for k, v in p.items()})
    if with_replicate:
        row["replicate"] = replicate
    row["attempts"] = attempts
    if isinstance(value, BlobMissingError):
        row["result_error"] = str(value)
        return row
    try:
        result = pickle.loads(value) if value is not None else None
    except Exception as err:
        # Its class cannot be imported here (a task file's own class, say): the row keeps
        # the pickled bytes as they were stored, for a reader that can import it.
        row["result_pickle"] = value
        row["result_error"] = f"result cannot be unpickled here: {type(err).__name__}: {err}"
        return row
    if isinstance(result, dict) and all(isinstance(k, str) for k in result):
        for key, val in result.items():
            row[f"result.{key}" if key in row else key] = _utf8(val)
    elif isinstance(result, _SCALARS):
        row["result"] = _utf8(result)
    else:
        # The stored pickle itself (it unpickles to this value): not pickled again.
        row["result_pickle"] = value
    return row


def _utf8(value: object) -> object:
    """A string Parquet can hold: lone surrogates (which UTF-8 cannot encode) escaped."""
    if isinstance(value, str):
        return safe_text(value)
    return value


def rows_to_table(rows: Sequence[Mapping[str, object]]) -> pa.Table:
    """An Arrow table from row dicts; columns Arrow cannot type are stored pickled."""
    import pyarrow as pa

    columns: dict[str, list[object]] = {}
    for i, row in enumerate(rows):
        for key, val in row.items():
            columns.setdefault(key, [None] * i).append(val)
        for col in columns.values():
            if len(col) < i + 1:
                col.append(None)
    arrays: dict[str, pa.Array | pa.ChunkedArray] = {}
    for key, col in columns.items():
        large = _large_bytes(col)
        if large is not None:
            arrays[key] = large
            continue
        try:
            arrays[key] = pa.array(col)
        except (
            pa.ArrowInvalid,
            pa.ArrowTypeError,
            pa.ArrowNotImplementedError,
            OverflowError,
            UnicodeEncodeError,
        ):
            arrays[key] = pa.array(
                [None if v is None else pickle.dumps(v) for v in col], type=pa.binary()
            )
    return pa.table(arrays) if arrays else pa.table({})


def _large_bytes(col: Sequence[object]) -> pa.ChunkedArray | None:
    """``col`` as a binary column that refers to its ``bytes`` values instead of copying
    them (a chunk of one row each: ``pa.array`` would copy them all into one buffer,
    grown by doubling, each time into fresh pages); None unless every value is ``bytes``
    or None and they average :data:`LARGE_VALUE_BYTES` or more."""
    import pyarrow as pa

    values: list[bytes | None] = []
    total = count = 0
    for value in col:
        if value is not None:
            if type(value) is not bytes or len(value) > _BINARY_MAX:
                return None
            total += len(value)
            count += 1
        values.append(value)
    if not count or total < LARGE_VALUE_BYTES * count:
        return None
    binary = pa.binary()
    chunks = [
        pa.nulls(1, binary)
        if value is None
        else pa.Array.from_buffers(
            binary, 1, [None, pa.py_buffer(_OFFSETS.pack(0, len(value))), pa.py_buffer(value)]
        )
        for value in values
    ]
    return pa.chunked_array(chunks, type=binary)


def table_for(store: Store, job_id: str, kind: str, part: int | None = None) -> pa.Table:
    # Replicate indices belong to task rows; an aggregation row stands for all of them.
    with_rep = kind == "task" and store.parts.has_replicates(job_id)
    rows = [
        result_row(tid, grp, rep, params, attempts, value, with_rep)
        for tid, grp, rep, params, attempts, value in store.queries.result_rows(job_id, kind, part)
    ]
    return rows_to_table(rows)


#: a binary or string column whose values average this many bytes or more (pickled
#: results, large blobs) is written without a dictionary and without statistics: neither
#: helps a column of large distinct values (Parquet drops min/max that long anyway), and
#: building them reads every byte once more
LARGE_VALUE_BYTES = 64 * 1024
#: the longest value a ``binary`` column holds (its offsets are 32-bit)
_BINARY_MAX = 2**31 - 1
#: a one-row binary array's offsets
_OFFSETS = struct.Struct("<ii")
#: such a column is compressed only if this much of it, compressed, shrinks by 10 % or more
COMPRESS_SAMPLE_BYTES = 64 * 1024
#: the codec of every other column (pyarrow's default)
CODEC = "snappy"


@dataclass(frozen=True)
class WriteOptions:
    """How a part's columns are encoded: the arguments of ``pyarrow.parquet.write_table``
    (a list: those leaf columns only; a dict: each leaf column's codec)."""

    use_dictionary: bool | list[str] = True
    write_statistics: bool | list[str] = True
    compression: str | dict[str, str] = CODEC


def write_options(table: pa.Table) -> WriteOptions:
    """Dictionary, statistics and compression for each column of ``table``: pyarrow's
    defaults, except for a column of large values (:data:`LARGE_VALUE_BYTES`), which gets
    no dictionary or statistics, and no compression unless a sample of it compresses (a
    pickled array of random numbers does not: compressing it only allocates and copies)."""
    import pyarrow as pa

    large: dict[str, str] = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        kind = column.type
        binary = pa.types.is_binary(kind) or pa.types.is_large_binary(kind)
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        count = len(column) - column.null_count
        if (binary or text) and count and column.nbytes >= LARGE_VALUE_BYTES * count:
            large[name] = CODEC if _compresses(column) else "none"
    if not large:
        return WriteOptions()
    # pyarrow takes these per leaf column: a nested column's leaves are named by their path.
    small = [path for path in _leaf_paths(table) if path not in large]
    return WriteOptions(small, small, {**dict.fromkeys(small, CODEC), **large})


def _leaf_paths(table: pa.Table) -> list[str]:
    """The Parquet leaf columns of ``table``, by path (``name``; ``name.list.element`` for
    a list, and so on), as pyarrow writes them."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not any(pa.types.is_nested(field.type) for field in table.schema):
        return list(table.column_names)
    sink = pa.BufferOutputStream()
    pq.write_table(table.schema.empty_table(), sink)
    schema = pq.ParquetFile(pa.BufferReader(sink.getvalue())).schema
    return [schema.column(i).path for i in range(len(schema))]


def _compresses(column: pa.ChunkedArray) -> bool:
    """Whether the first :data:`COMPRESS_SAMPLE_BYTES` of ``column``'s values shrink by at
    least 10 % with :data:`CODEC`."""
    import pyarrow as pa

    sample = bytearray()
    for chunk in column.chunks:
        for value in chunk:
            if value.is_valid:
                buffer = value.as_buffer()
                sample += buffer.slice(0, min(buffer.size, COMPRESS_SAMPLE_BYTES - len(sample)))
            if len(sample) >= COMPRESS_SAMPLE_BYTES:
                break
        if len(sample) >= COMPRESS_SAMPLE_BYTES:
            break
    packed = pa.Codec(CODEC).compress(bytes(sample), asbytes=True)
    return len(packed) <= 0.9 * len(sample)


def _write_atomic(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-", suffix=".tmp")
    os.close(fd)
    options = write_options(table)
    try:
        pq.write_table(
            table,
            tmp,
            use_dictionary=options.use_dictionary,
            write_statistics=options.write_statistics,
            compression=options.compression,
        )
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def part_path(out: str | os.PathLike[str], job_id: str, kind: str, n: int) -> Path:
    """Where part ``n`` of ``job_id``'s results of ``kind`` is written: named by its job,
    so that another job writing to the same ``out`` never replaces it."""
    return Path(out) / KIND_DIR[kind] / f"part-{job_id}-{n:05d}.parquet"


def _write_part(store: Store, job_id: str, kind: str, n: int, out: str) -> None:
    table = table_for(store, job_id, kind, part=n)
    _write_atomic(table, part_path(out, job_id, kind, n))
    store.parts.written(job_id, kind, n)


@dataclass(frozen=True)
class PartPolicy:
    """When rows of stored results make a Parquet part.

    A part is cut when ``rows`` results or about ``bytes`` of them are waiting (a part is
    built in memory before it is written, so bytes bound the scheduler's memory whatever
    the size of a result), when the oldest has waited ``max_delay`` seconds, when the job
    has finished, and at the final pass.
    """

    rows: int = 10_000
    bytes: int = 32 * 1024**2
    max_delay: float = 10.0

    @classmethod
    def of(cls, config: RunnerConfig) -> PartPolicy:
        return cls(config.part_rows, config.part_bytes, config.part_max_delay)


def write_pending_parts(
    store: Store,
    policy: PartPolicy,
    *,
    final: bool,
    jobs: Iterable[str] | None = None,
    waiting: dict[tuple[str, str], float] | None = None,
    errors: dict[str, str] | None = None,
) -> int:
    """Write the part files that are due; return how many were written.

    ``waiting`` remembers, between calls, since when rows of a job and kind have waited
    (for ``policy.max_delay``); without it, rows never wait on time alone.

    A job whose part cannot be written (a full disk, an output directory made read-only)
    is logged and said in ``errors`` (job id → message, cleared when it succeeds); the
    other jobs' parts are still written. Its rows stay assigned or unassigned in the
    store, so a later pass, or the next scheduler, writes them.
    """
    written = 0
    failed: set[str] = set()
    for job_id, kind, n, out in store.parts.unwritten():
        try:
            _write_part(store, job_id, kind, n, out)
            written += 1
        except Exception as err:
            failed.add(job_id)
            _part_failed(errors, job_id, out, err)
    outs = {j: out for j, out in store.parts.outputs(jobs).items() if j not in failed}
    now = time.monotonic()
    for job_id, out in outs.items():
        try:
            written += _write_job_parts(store, policy, job_id, out, final, waiting, now)
        except Exception as err:
            _part_failed(errors, job_id, out, err)
        else:
            if errors is not None:
                errors.pop(job_id, None)
    return written


def _part_failed(errors: dict[str, str] | None, job_id: str, out: str, err: Exception) -> None:
    message = f"cannot write a Parquet part to {out!r}: {type(err).__name__}: {err}"
    log.error("job %s: %s", job_id, message)
    if errors is not None:
        errors[job_id] = message


def _write_job_parts(
    store: Store,
    policy: PartPolicy,
    job_id: str,
    out: str,
    final: bool,
    waiting: dict[tuple[str, str], float] | None,
    now: float,
) -> int:
    written = 0
    for pending in store.parts.pending(job_id):
        kind, count, size = pending.kind, pending.count, pending.bytes
        since = now if waiting is None else waiting.setdefault((job_id, kind), now)
        overdue = waiting is not None and now - since >= policy.max_delay
        finished = store.low_group(job_id) is None
        while count > 0 and (
            count >= policy.rows or size >= policy.bytes or overdue or final or finished
        ):
            n, rows_in, bytes_in = store.parts.assign(job_id, kind, out, policy.rows, policy.bytes)
            _write_part(store, job_id, kind, n, out)
            written += 1
            count -= rows_in
            size -= bytes_in
            overdue = False  # what is left is younger than what was just written
            if waiting is not None:
                waiting[(job_id, kind)] = now
        if waiting is not None and count <= 0:
            waiting.pop((job_id, kind), None)
    return written
