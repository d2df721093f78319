"""Jobs as files: ``oomguard run study.toml`` (TOML, or JSON for ``*.json``).

A spec's top-level keys are the options of ``oomguard run`` by their long names
(``worker-memory``; ``worker_memory`` is the same key), plus ``task`` or ``cmd`` (with
``shell``), ``name``, and where the parameters come from: ``params = "file.jsonl"``,
``rows = [{...}, ...]``, or a ``[grid]`` table whose lists are expanded as a product (a
value that is not a list is the same for every row). ``--set KEY=VALUE`` changes a key
of the file (``--set grid.n=[1,2]`` a key of the grid); options given on the command line
(or in their ``OOMGUARD_*`` variables) win over the file. Every value is checked as the
option would be; a key that is not known, a bad value or a file that does not parse is
refused with the file, the line and the key (exit 2). Relative paths in a spec
(``params``, ``out``, ``store``, ``path/to/file.py:function``) are relative to its
directory. See docs/ARCHITECTURE.md, "Jobs as files".
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import click
from click.core import ParameterSource

from oomguard.errors import ConfigError, InputFileNotFoundError, PayloadError
from oomguard.jobs.jsonvalue import JSON, JSONObject
from oomguard.store.location import is_url

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

#: spec keys that are not options of ``run`` (what a job is made of)
#: the most rows a [grid] may make: they are held in memory (a params file is streamed)
MAX_GRID_ROWS = 1_000_000
JOB_KEYS = ("task", "cmd", "shell", "command", "params", "rows", "grid", "name")
#: options of ``run`` that a spec cannot set
NOT_IN_SPEC = ("set", "json")
#: spec keys that are paths, relative to the spec's directory
PATH_KEYS = ("params_file", "out", "store")
SPEC_SUFFIXES = (".toml", ".json")


@dataclass
class Spec:
    """A spec file, read and checked: the option values it sets (by parameter name) and
    its job's keys."""

    path: str
    #: option values by click parameter name (``worker_memory``), converted
    options: dict[str, object] = field(default_factory=dict)
    #: ``task``, ``cmd``, ``shell``, ``rows``, ``grid``, ``name`` as given
    job: JSONObject = field(default_factory=dict)


def is_spec(argument: str | None) -> bool:
    return bool(argument) and str(argument).endswith(SPEC_SUFFIXES)


def _line_of(text: str, key: str, json_file: bool) -> int | None:
    """The line where ``key`` is given (the parsers say no line for a key)."""
    leaf = key.rpartition(".")[2]
    quoted = rf'(?:{re.escape(leaf)}|"{re.escape(leaf)}"|\'{re.escape(leaf)}\')'
    if json_file:
        pattern = re.compile(rf'"{re.escape(leaf)}"\s*:')
    else:
        pattern = re.compile(rf"^\s*(?:{quoted}\s*=|\[\[?\s*{quoted}\s*\])")
    for lineno, line in enumerate(text.splitlines(), 1):
        if pattern.search(line):
            return lineno
    return None


class SpecReader:
    """Reads a spec file against a schema: the options of ``run``
    (:data:`oomguard.cli.run_options.RUN_OPTIONS`), each key checked as its option is."""

    def __init__(self, schema: Iterable[click.Parameter]) -> None:
        self.by_key: dict[str, click.Parameter] = {}
        for param in schema:
            if not isinstance(param, click.Option) or param.name in NOT_IN_SPEC:
                continue
            for opt in param.opts:
                if opt.startswith("--"):
                    self.by_key[opt[2:]] = param

    def known(self) -> list[str]:
        return sorted([*self.by_key, *JOB_KEYS])

    def read(self, ctx: click.Context, path: str, sets: tuple[str, ...] = ()) -> Spec:
        data, text = _load(path)
        where = _Where(path, text, path.endswith(".json"))
        for item in sets:
            _apply_set(data, item, self)
        spec = Spec(path)
        base = os.path.dirname(os.path.abspath(path))
        for raw_key, value in data.items():
            key = raw_key.replace("_", "-")
            if key in JOB_KEYS:
                spec.job[key] = _job_value(where, key, value, base)
                continue
            param = self.by_key.get(key)
            if param is None:
                raise ConfigError(
                    f"{where.at(raw_key)}: unknown key {raw_key!r} (known keys: "
                    f"{', '.join(self.known())})"
                )
            assert param.name is not None
            try:
                converted = param.type_cast_value(ctx, value)
                if param.callback is not None:
                    converted = param.callback(ctx, param, converted)
            except click.BadParameter as err:
                raise ConfigError(f"{where.at(raw_key)}: {raw_key}: {err.message}") from None
            except ConfigError as err:
                raise ConfigError(f"{where.at(raw_key)}: {raw_key}: {err}") from None
            if param.name in PATH_KEYS and isinstance(converted, str) and not is_url(converted):
                converted = os.path.join(base, converted)
            elif param.name == "aggregate" and isinstance(converted, str):
                converted = _relative_ref(converted, base)
            spec.options[param.name] = converted
        if "params" in spec.job:
            spec.options["params_file"] = spec.job.pop("params")
        sources: list[str] = [k for k in ("rows", "grid") if k in spec.job]
        if "params_file" in spec.options:
            sources.insert(0, "params")
        if len(sources) > 1:
            raise ConfigError(
                f"{where.at(sources[1])}: {sources[1]}: give one of params, rows or [grid], "
                f"not {' and '.join(sources)}"
            )
        given = [k for k in ("task", "cmd", "command") if k in spec.job]
        if len(given) > 1:
            raise ConfigError(
                f"{where.at(given[1])}: {given[1]}: give one of task, cmd or command, "
                f"not {' and '.join(given)}"
            )
        if "shell" in spec.job and "cmd" not in spec.job:
            raise ConfigError(f"{where.at('shell')}: shell: goes with cmd")
        return spec


@dataclass
class _Where:
    path: str
    text: str
    json_file: bool

    def at(self, key: str) -> str:
        line = _line_of(self.text, key, self.json_file)
        return f"{self.path}:{line}" if line else self.path


def _load(path: str) -> tuple[JSONObject, str]:
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as err:
        raise ConfigError(f"cannot read spec {path!r}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason})") from None
    try:
        return _parse(path, text)
    except (RecursionError, MemoryError) as err:
        # The parsers recurse per nesting level: 100,000 brackets exhaust the stack.
        what = "nested too deeply" if isinstance(err, RecursionError) else "too large"
        raise ConfigError(
            f"{path}:{_deepest_line(text)}: {what} to read ({type(err).__name__})"
        ) from None


def _deepest_line(text: str) -> int:
    """The line where brackets nest deepest (outside quoted strings, roughly)."""
    depth = best = 0
    line = best_line = 1
    quote = ""
    escaped = False
    for char in text:
        if char == "\n":
            line += 1
        if quote:
            if escaped:
                escaped = False
            elif char == "\\" and quote == '"':
                escaped = True
            elif char == quote:
                quote = ""
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
            if depth > best:
                best, best_line = depth, line
        elif char in "]}":
            depth -= 1
    return best_line


def _parse(path: str, text: str) -> tuple[JSONObject, str]:
    if path.endswith(".json"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}:1: a spec is a JSON object, not {type(data).__name__}")
        return data, text
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        found = re.search(r"\(at line (\d+), column \d+\)", message)
        if found is None:
            found = re.search(r"\(at end of document\)", message)
            line = str(max(1, len(text.splitlines())))
        else:
            line = found.group(1)
        reason = message[: found.start()].strip() if found else message
        raise ConfigError(f"{path}:{line}: not valid TOML ({reason})") from None


def _apply_set(data: JSONObject, item: str, reader: SpecReader) -> None:
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word: a string
    head, dot, leaf = key.partition(".")
    if dot:
        if head.replace("_", "-") != "grid" or not leaf:
            raise ConfigError(f"--set {item!r}: only grid keys have dots (grid.NAME=...)")
        grid = data.setdefault("grid", {})
        if not isinstance(grid, dict):
            raise ConfigError(f"--set {item!r}: grid is not a table")
        grid[leaf] = value
        return
    norm = key.replace("_", "-")
    if norm not in reader.by_key and norm not in JOB_KEYS:
        raise ConfigError(
            f"--set {item!r}: unknown key {key!r} (known keys: {', '.join(reader.known())})"
        )
    # The same key may be spelled with - or _ in the file: --set replaces it either way.
    for existing in [k for k in data if k.replace("_", "-") == norm]:
        del data[existing]
    data[key] = value


def _job_value(where: _Where, key: str, value: JSON, base: str) -> JSON:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where.at(key)}: {key}: expected {expected}, got {value!r:.80}")

    if key in ("task", "name", "params", "command"):
        if not isinstance(value, str) or not value:
            raise bad("a string")
        if key == "params":
            return os.path.join(base, value)
        if key == "task":
            return _relative_ref(value, base)
        return value
    if key == "shell":
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if key == "cmd":
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return value
        raise bad("a command line or a list of strings")
    if key == "rows":
        if not isinstance(value, list) or not value:
            raise bad("a list of tables")
        for i, row in enumerate(value):
            if not isinstance(row, dict):
                raise ConfigError(
                    f"{where.at(key)}: rows[{i}]: expected a table of parameters, got {row!r:.80}"
                )
        return value
    # grid
    if not isinstance(value, dict) or not value:
        raise bad("a table of parameter lists")
    for name, values in value.items():
        if isinstance(values, list) and not values:
            raise ConfigError(f"{where.at(name)}: grid.{name}: an empty list makes no rows")
    # Counted before one row is built: a few bytes of lists can make billions of rows.
    count = math.prod(len(v) if isinstance(v, list) else 1 for v in value.values())
    if count > MAX_GRID_ROWS:
        raise ConfigError(
            f"{where.at(key)}: [grid] makes {count:,} rows, more than the {MAX_GRID_ROWS:,} "
            "a spec may hold in memory: write the rows to a params file (read as a stream)"
        )
    return value


def _relative_ref(ref: str, base: str) -> str:
    where, sep, name = ref.rpartition(":")
    if sep and where.endswith(".py") and not os.path.isabs(where):
        return f"{os.path.join(base, where)}:{name}"
    return ref


def merge(ctx: click.Context, spec: Spec, given: dict[str, object]) -> dict[str, object]:
    """``given`` (the command's parameters) with the spec's values where the command line
    (or the environment) did not set them."""
    merged = dict(given)
    for name, value in spec.options.items():
        source = ctx.get_parameter_source(name)
        if source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            continue
        merged[name] = value
    return merged


def parameter_rows(
    params_file: str | None, job: JSONObject
) -> tuple[Iterable[JSONObject], str, str] | None:
    """The parameter sets (streamed from a file), their digest and where they came from
    (``params``, ``rows``, ``grid``); None when the spec gives none."""
    if params_file is not None:
        digest, _count = check_params_file(params_file)
        return iter_params_file(params_file), digest, "params"
    given = job.get("rows")
    if isinstance(given, list):  # each a table: checked when the spec was read
        rows = [row for row in given if isinstance(row, dict)]
        return rows, rows_digest(rows), "rows"
    grid = job.get("grid")
    if isinstance(grid, dict):
        rows = list(expand_grid(grid))
        return rows, rows_digest(rows), "grid"
    return None


def option_int(spec: Spec, name: str) -> int | None:
    """An integer option of the spec (its value was converted by its option's type)."""
    value = spec.options.get(name)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def option_float(spec: Spec, name: str) -> float | None:
    value = spec.options.get(name)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def option_str(spec: Spec, name: str) -> str | None:
    value = spec.options.get(name)
    return value if isinstance(value, str) else None


def job_str(spec: Spec, key: str) -> str | None:
    """A string key of the job (``task``, ``cmd`` as a line, ``name``, ``command``)."""
    value = spec.job.get(key)
    return value if isinstance(value, str) else None


def expand_grid(grid: JSONObject) -> Iterator[JSONObject]:
    """The product of the grid's lists (the first key varies slowest)."""
    names = list(grid)
    axes = [v if isinstance(v, list) else [v] for v in grid.values()]
    for values in itertools.product(*axes):
        yield dict(zip(names, values, strict=True))


def rows_digest(rows: object) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


# -- params files (JSON Lines) ------------------------------------------------------------


def check_params_file(path: str) -> tuple[str, int]:
    """Validate the params file: every line a JSON object. Return (hash, count)."""
    digest = hashlib.sha256()
    count = 0
    try:
        fh = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError as err:
        raise InputFileNotFoundError(f"no params file {path!r}", path=path) from err
    except OSError as err:
        raise PayloadError(f"cannot read params file {path!r}: {err.strerror}") from err
    with fh:
        for lineno, raw in enumerate(fh, 1):
            digest.update(raw)
            if not raw.strip():
                continue
            try:
                value = json.loads(raw)
            except ValueError as err:
                reason = getattr(err, "msg", str(err))
                raise PayloadError(
                    f"{path}:{lineno}: not valid JSON ({reason})", line=lineno
                ) from err
            if not isinstance(value, dict):
                raise PayloadError(
                    f"{path}:{lineno}: expected a JSON object of keyword arguments, "
                    f"got {type(value).__name__}",
                    line=lineno,
                )
            count += 1
    return digest.hexdigest(), count


def iter_params_file(path: str) -> Iterator[JSONObject]:
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                yield json.loads(raw)


__all__ = [
    "Spec",
    "SpecReader",
    "check_params_file",
    "expand_grid",
    "is_spec",
    "iter_params_file",
    "job_str",
    "merge",
    "option_float",
    "option_int",
    "option_str",
]
