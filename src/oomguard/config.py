"""Frozen configuration, from keyword arguments, a config file and ``OOMGUARD_*``.

Precedence: explicit values (Python arguments, CLI options) > environment > config file >
defaults. Unknown keys in the file are rejected, not ignored.

A config file is read only from where the user pointed (docs/ARCHITECTURE.md,
"Trusted inputs"): ``--config FILE`` or ``OOMGUARD_CONFIG``. ``oomguard run`` also reads
an unnamed ``./oomguard.toml`` when it is a regular file owned by the user and not
writable by group or others, and never takes a connection target (:data:`TARGET_KEYS`)
from it; ``serve`` and the Python API never read an unnamed file
(:func:`config_source`).
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from oomguard.errors import ConfigError
from oomguard.units import parse_duration, parse_size

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

ISOLATION_MODES = ("auto", "cgroup", "watchdog")
#: how attempts are isolated on a Dask worker ("thread": in the worker process itself)
DASK_ISOLATION_MODES = (*ISOLATION_MODES, "thread")
LOG_FORMATS = ("plain", "json")
#: what ``notify_on`` may hold (see oomguard.notify.webhook)
NOTIFY_ON = ("failed", "final", "job")


@dataclass(frozen=True)
class RunnerConfig:
    """Everything the scheduler and its worker pool need to know."""

    store: str = "oomguard.sqlite"
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    executor: str = "local"
    dask_address: str | None = None
    #: the most any single attempt may use (its worker's kernel limit); None: the budget
    worker_memory: int | None = None
    #: memory the scheduler may hand out; None: machine/cgroup limit minus the reserve
    memory_budget: int | None = None
    #: memory kept for the scheduler itself when the budget is derived
    memory_reserve: int = 256 * 1024**2
    #: estimate for tasks of a memory key never seen (and nothing declared)
    default_task_memory: int = 512 * 1024**2
    #: declared estimate for every task of a run (``--task-memory``)
    task_memory: int | None = None
    #: parameter whose value keys learned estimates (``--memory-key``)
    memory_key: str | None = None
    isolation: str = "auto"
    worker_oom_score_adj: int = 800
    max_tasks_per_worker: int = 0
    #: replace a worker whose RSS after trimming grew by this fraction of its limit
    recycle_growth_fraction: float = 0.25
    #: how many parameter groups (replicates + aggregation) may be open at once
    batch_size: int = 1000
    #: retries for task errors and timeouts when the task declares none
    retries: int = 0
    #: seconds a task may run when it declares no timeout (None: no limit)
    task_timeout: float | None = None
    #: retries after a worker death with no OOM evidence (killed, crashed, lost)
    death_retries: int = 3
    #: attempts of a task that may end 'lost' before it fails as lost
    lost_retries: int = 5
    retry_backoff: float = 0.5
    retry_backoff_max: float = 60.0
    #: in-memory window of tasks taken from the store
    window: int = 2000
    #: seconds after which a scheduler that did not heartbeat is dead (its attempts lost)
    lease_ttl: float = 30.0
    #: seconds between heartbeats (at most a third of `lease_ttl` is used)
    heartbeat_interval: float = 5.0
    #: share the store with other live replicas (`oomguard serve --replica`) instead of
    #: owning it alone; each replica takes over the dead ones (docs/guide/replicas.md)
    replica: bool = False
    #: the longest the scheduler's loop waits when nothing wakes it (seconds): how soon it
    #: finds tasks another process made ready when no wake-up tells it (SQLite; PostgreSQL
    #: notifies, see docs/guide/postgresql.md)
    idle_wait: float = 0.25
    #: the longest an outcome waits for its commit group to commit (seconds)
    commit_interval: float = 0.02
    commit_max: int = 2000
    #: a large task waiting this long gets room reserved for it
    starvation_wait: float = 10.0
    #: a Parquet part holds at most this many rows ...
    part_rows: int = 10000
    #: ... and about this many bytes of results (it is built in memory before it is written)
    part_bytes: int = 32 * 1024**2
    #: a stored result waits at most about this long for its Parquet part (seconds)
    part_max_delay: float = 10.0
    part_interval: float = 0.5
    #: Dask: tasks in flight per Dask worker thread (each up to 8 short attempts)
    dask_window_per_thread: int = 4
    #: Dask: where each attempt runs on the worker host: ``auto`` (a child process in its
    #: own memory cgroup, else under the RSS watchdog), ``cgroup``, ``watchdog``, or
    #: ``thread`` (in the Dask worker's own thread: nothing isolated)
    dask_isolation: str = "auto"
    #: the caller's directory: workers run tasks in it and import task modules from it,
    #: after everything installed. "" for none: workers run in "/" and import only from the
    #: installed packages and PYTHONPATH (what ``oomguard serve`` does)
    task_dir: str = field(default_factory=os.getcwd)
    kernel_log: str = "/dev/kmsg"
    #: how long to wait for the kernel's "Killed process" line after a SIGKILL
    kernel_log_wait: float = 2.0
    #: Sentry DSN: every failed attempt becomes a Sentry event (``oomguard[sentry]``)
    sentry_dsn: str | None = None
    #: webhook URLs: a signed JSON POST per notification
    notify_url: tuple[str, ...] = ()
    #: what the webhooks get: ``failed`` (every failed attempt), ``final`` (tasks that
    #: failed for good), ``job`` (jobs that finished)
    notify_on: tuple[str, ...] = ("final", "job")
    #: file holding the HMAC-SHA256 key that signs webhook bodies (a second line: the
    #: next key, during a rotation); private to its owner
    notify_secret_file: str | None = None
    #: regular expressions whose matches are replaced by ``[redacted]`` in what leaves the
    #: host (webhook bodies, Sentry events)
    redact: tuple[str, ...] = ()
    #: notifications waiting per receiver; past it newer ones are dropped and counted
    notify_queue: int = 1000
    #: seconds one webhook POST may take
    notify_timeout: float = 5.0
    #: notices the store's outbox holds for the webhooks at most; past it the oldest are
    #: dropped and counted
    notify_outbox: int = 100_000
    #: ``json``: a JSON line per attempt end and job state change on stderr
    log_format: str = "plain"
    #: ``oomguard serve``: finished jobs older than this (seconds; "7d" in oomguard.toml)
    #: are forgotten and unreferenced blobs removed, periodically (None: kept for ever)
    retention: float | None = None

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"workers must be at least 1, not {self.workers}")
        if self.isolation not in ISOLATION_MODES:
            raise ConfigError(
                f"isolation must be one of {', '.join(ISOLATION_MODES)}, not {self.isolation!r}"
            )
        if self.dask_isolation not in DASK_ISOLATION_MODES:
            raise ConfigError(
                f"dask isolation must be one of {', '.join(DASK_ISOLATION_MODES)}, "
                f"not {self.dask_isolation!r}"
            )
        if self.executor not in ("local", "dask"):
            raise ConfigError(f"executor must be local or dask, not {self.executor!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, not {self.batch_size}")
        if self.max_tasks_per_worker < 0:
            raise ConfigError("max tasks per worker must be >= 0 (0: no limit)")
        if not 0 <= self.worker_oom_score_adj <= 1000:
            # Workers may only raise theirs (no privilege needed): a negative value would
            # protect a worker and make the kernel kill the scheduler or a daemon first.
            raise ConfigError(
                f"worker oom_score_adj must be between 0 and 1000, not "
                f"{self.worker_oom_score_adj}: workers are to be killed first, not spared"
            )
        if self.task_dir and not os.path.isabs(self.task_dir):
            raise ConfigError(f"task_dir must be an absolute path, not {self.task_dir!r}")
        if self.lost_retries < 0:
            raise ConfigError(f"lost retries must be at least 0, not {self.lost_retries}")
        if self.task_timeout is not None and self.task_timeout <= 0:
            raise ConfigError("the task timeout must be more than 0 seconds")
        if self.retention is not None and self.retention <= 0:
            raise ConfigError("the retention must be more than 0 seconds")
        self._check_notifications()
        for name in ("worker_memory", "memory_budget", "task_memory"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"{name.replace('_', ' ')} must be larger than 0")

    def _check_notifications(self) -> None:
        # Lists may come as one string (env, a single URL) or a list (TOML, Python).
        for name in _LIST_FIELDS:
            object.__setattr__(self, name, _as_tuple(name, getattr(self, name)))
        if self.sentry_dsn == "":
            object.__setattr__(self, "sentry_dsn", None)
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"log format must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}"
            )
        wrong = [v for v in self.notify_on if v not in NOTIFY_ON]
        if wrong:
            raise ConfigError(
                f"notify on must be some of {', '.join(NOTIFY_ON)}, not {', '.join(wrong)}"
            )
        for i, url in enumerate(self.notify_url, 1):
            if not url.startswith(("http://", "https://")):
                # Not echoed: a webhook URL is its own credential.
                raise ConfigError(f"notify url {i} is not an http:// or https:// URL")
        for pattern in self.redact:
            try:
                re.compile(pattern)
            except re.error as err:
                raise ConfigError(
                    f"redact {pattern!r} is not a regular expression: {err}"
                ) from None
        if self.notify_queue < 1:
            raise ConfigError(f"notify queue must be at least 1, not {self.notify_queue}")
        if self.notify_outbox < 1:
            raise ConfigError(f"notify outbox must be at least 1, not {self.notify_outbox}")
        if self.notify_timeout <= 0:
            raise ConfigError("the notify timeout must be more than 0 seconds")

    def replace(self, **changes: object) -> RunnerConfig:
        return _built({k: v for k, v in changes.items() if v is not None}, self)


_SIZE_FIELDS = {
    "worker_memory",
    "memory_budget",
    "memory_reserve",
    "default_task_memory",
    "task_memory",
    "part_bytes",
}


_LIST_FIELDS = ("notify_url", "notify_on", "redact")


def _as_tuple(name: str, value: object) -> tuple[str, ...]:
    """A list field from a string (split on whitespace; for ``notify_on`` on commas too)
    or a sequence."""
    if value is None:
        return ()
    if isinstance(value, str):
        text = value.replace(",", " ") if name == "notify_on" else value
        return tuple(text.split())
    if isinstance(value, (list, tuple)):
        return tuple(str(v) for v in value)
    raise ConfigError(f"{name}: expected a list of strings, got {value!r}")


def _built(values: dict[str, object], base: RunnerConfig | None = None) -> RunnerConfig:
    """A config of ``values`` (over ``base``'s); RunnerConfig checks them in __post_init__."""
    if base is not None:
        given = {f.name: getattr(base, f.name) for f in fields(RunnerConfig) if f.init}
        values = given | values
    return _by_name(RunnerConfig, values)


def _by_name(make: Callable[..., RunnerConfig], values: Mapping[str, object]) -> RunnerConfig:
    # Each value is of its field's type (from _coerce, or the caller's), which mypy cannot
    # follow through the mapping.
    return make(**values)


def _coerce(name: str, value: object) -> object:
    types = {f.name: f.type for f in fields(RunnerConfig)}
    if name in _SIZE_FIELDS:
        if not isinstance(value, str | int | float):
            raise ConfigError(f"{name}: expected a size, got {value!r}")
        return parse_size(value)
    if name in _LIST_FIELDS:
        return _as_tuple(name, value)
    if name == "retention" and isinstance(value, str):
        return parse_duration(value)
    kind = str(types[name])
    if kind.startswith(("int", "float")) and not isinstance(value, str | int | float):
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    try:
        if kind.startswith("int") and isinstance(value, str | int | float):
            return int(value)
        if kind.startswith("float") and isinstance(value, str | int | float):
            return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    return value if value is None else str(value)


#: the config file ``oomguard run`` looks for in its directory when none is named
IMPLICIT_CONFIG = "oomguard.toml"
#: keys naming where oomguard connects or sends: only from a file the user named
TARGET_KEYS = ("dask_address", "executor", "kernel_log", "notify_url", "sentry_dsn")


@dataclass(frozen=True)
class ConfigSource:
    """Which config file is read, and the line that tells the operator so."""

    #: the file to read (None: none)
    file: Path | None
    #: named by ``--config`` or ``OOMGUARD_CONFIG`` (an unnamed file sets no target)
    named: bool
    #: for the operator at start ("" when there is nothing to say)
    note: str


def config_source(
    path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    *,
    implicit: bool = False,
    directory: Path = Path("."),
) -> ConfigSource:
    """The config file to read: ``path``, else ``OOMGUARD_CONFIG``, else (``implicit``,
    for ``oomguard run``) ``directory/oomguard.toml`` if it is a regular file owned by
    this user and not writable by group or others. A file there that is not read is said
    in :attr:`ConfigSource.note`."""
    env = dict(os.environ if env is None else env)
    named = str(path) if path else env.get("OOMGUARD_CONFIG", "")
    if named:
        file = Path(named)
        return ConfigSource(file, True, f"config from {file.resolve()}")
    here = directory / IMPLICIT_CONFIG
    try:
        st = os.lstat(here)
    except OSError:
        return ConfigSource(None, False, "")
    shown = f"./{IMPLICIT_CONFIG}" if directory == Path(".") else str(here)
    if not implicit:
        return ConfigSource(
            None,
            False,
            f"ignoring {shown}: a config file is read only when named "
            "(--config FILE or OOMGUARD_CONFIG)",
        )
    why = None
    if not stat.S_ISREG(st.st_mode):
        why = "it is not a regular file"
    elif st.st_uid != os.geteuid():
        why = f"it is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    elif st.st_mode & 0o022:
        why = f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if why is not None:
        return ConfigSource(
            None, False, f"ignoring {shown}: {why}; name a file with --config to use it"
        )
    return ConfigSource(here, False, f"config from {here.resolve()} (found in this directory)")


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    *,
    source: ConfigSource | None = None,
    **overrides: object,
) -> RunnerConfig:
    """Build the config: ``overrides`` > ``OOMGUARD_*`` env > the config file > defaults.

    The file is ``source``'s, else ``path`` or ``OOMGUARD_CONFIG`` (never an unnamed
    one: see :func:`config_source`)."""
    return config_from(overrides, path, env, source=source)


def config_from(
    overrides: Mapping[str, object],
    path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    *,
    source: ConfigSource | None = None,
) -> RunnerConfig:
    """:func:`load_config` with the overrides as a mapping (option values by name, as the
    CLI has them)."""
    env = dict(os.environ if env is None else env)
    known = {f.name for f in fields(RunnerConfig)}
    values: dict[str, object] = {}
    if source is None:
        source = config_source(path, env)
    file = source.file
    if file is not None:
        try:
            data = tomllib.loads(file.read_text())
        except OSError as err:
            raise ConfigError(f"cannot read config file {str(file)!r}: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {str(file)!r} is not valid TOML: {err}") from err
        data = data.get("oomguard", data)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) in {str(file)!r}: {', '.join(unknown)}")
        targets = sorted(set(data) & set(TARGET_KEYS))
        if targets and not source.named:
            raise ConfigError(
                f"{str(file)!r} was not named, so it may not set {', '.join(targets)} "
                "(where oomguard connects or sends): name it with --config FILE or "
                "OOMGUARD_CONFIG, or give these as options"
            )
        values.update({k: _coerce(k, v) for k, v in data.items()})
    for name in known:
        key = "OOMGUARD_" + name.upper()
        if key in env and env[key] != "":
            values[name] = _coerce(name, env[key])
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"unknown config option(s): {', '.join(unknown)}")
    return _built(values)
