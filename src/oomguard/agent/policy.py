"""The OOM policy kept on the node (``--policy FILE``): ``oom_score_adj`` for the
processes a rule selects, and ``memory.oom.group`` for the cgroups a rule selects.

The file is TOML::

    [[oom_score_adj]]          # the first rule that selects a process gives its value
    value = 900
    cgroup = "*/kubepods*"     # fnmatch patterns; every selector given must match
    namespace = "batch-*"      # a pod's namespace (needs --kubelet-url), qos from the path
    qos = "besteffort"
    unit = "*.service"
    command = "python*"        # the process's comm

    [[oom_group]]               # cgroup v2 only
    cgroup = "/kubepods.slice/*/*.scope"
    value = 0

:class:`Reconciler` applies it at start and then on every pass (``--policy-interval``):
each process is looked at when it is new, or when its cgroup or command changed (a
process exec'd into a container, or moved into its cgroup after it started), so new
processes and containers get their value as they appear. ``--dry-run`` prints what it
would change and changes nothing. Every change is logged; a value the kernel refuses
(lowering ``oom_score_adj`` below what the process had needs CAP_SYS_RESOURCE) is
reported once per process and skipped: the agent keeps running.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from oomguard.agent.attribution import NoPodNames, PodNames, Workload, workload_of_path
from oomguard.cgroups.locate import parse_proc_cgroup
from oomguard.errors import ConfigError
from oomguard.procfs import read_stat, read_text

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

__all__ = ["AdjRule", "Change", "GroupRule", "Outcome", "Policy", "Reconciler", "load_policy"]

log = logging.getLogger("oomguard.agent")

#: PF_KTHREAD in /proc/PID/stat's flags: kernel threads have no oom_score_adj to keep
PF_KTHREAD = 0x00200000
ADJ_MIN, ADJ_MAX = -1000, 1000


@dataclass(frozen=True)
class AdjRule:
    """Selects processes (every selector given must match) and gives them ``value``."""

    value: int
    cgroup: str | None = None
    unit: str | None = None
    namespace: str | None = None
    qos: str | None = None
    command: str | None = None

    def selects(self, cgroup: str, command: str, workload: Workload) -> bool:
        checks = (
            (self.cgroup, cgroup),
            (self.unit, workload.unit),
            (self.namespace, workload.namespace),
            (self.qos, workload.qos),
            (self.command, command),
        )
        return all(
            pattern is None or (value is not None and fnmatch.fnmatchcase(value, pattern))
            for pattern, value in checks
        )


@dataclass(frozen=True)
class GroupRule:
    """``memory.oom.group`` = ``value`` for the cgroups whose path matches ``cgroup``."""

    cgroup: str
    value: bool


@dataclass(frozen=True)
class Policy:
    adj: tuple[AdjRule, ...] = ()
    groups: tuple[GroupRule, ...] = ()


class Outcome(str, Enum):
    CHANGED = "changed"
    WOULD_CHANGE = "would_change"  # --dry-run
    REFUSED = "refused"  # the kernel said no (EACCES/EPERM)
    UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class Change:
    """One change the policy made, would make, or was refused."""

    setting: str  # "oom_score_adj" or "memory.oom.group"
    target: str  # "pid 123 (python) in /kubepods/..." or a cgroup path
    old: str
    new: str
    outcome: Outcome
    reason: str = ""

    def describe(self) -> str:
        verb = {
            Outcome.CHANGED: "set",
            Outcome.WOULD_CHANGE: "would set",
            Outcome.REFUSED: "could not set",
            Outcome.UNSUPPORTED: "cannot set",
        }[self.outcome]
        tail = f": {self.reason}" if self.reason else ""
        return f"policy: {verb} {self.setting} of {self.target} from {self.old} to {self.new}{tail}"


_ADJ_KEYS = {"value", "cgroup", "unit", "namespace", "qos", "command"}


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read ``path``; a file that is not a valid policy is a ConfigError naming why."""
    where = f"--policy {str(path)!r}"
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"{where}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{where} is not TOML: {err}") from None
    unknown = set(data) - {"oom_score_adj", "oom_group"}
    if unknown:
        raise ConfigError(f"{where}: unknown table(s) {sorted(unknown)}")
    adj: list[AdjRule] = []
    for n, raw in enumerate(_tables(data.get("oom_score_adj", []), where), 1):
        extra = set(raw) - _ADJ_KEYS
        value = raw.get("value")
        if extra:
            raise ConfigError(f"{where}: oom_score_adj rule {n}: unknown key(s) {sorted(extra)}")
        if not isinstance(value, int) or isinstance(value, bool) or not ADJ_MIN <= value <= ADJ_MAX:
            raise ConfigError(f"{where}: oom_score_adj rule {n}: value must be -1000..1000")
        selectors = {k: raw.get(k) for k in _ADJ_KEYS - {"value"}}
        if not all(v is None or isinstance(v, str) for v in selectors.values()):
            raise ConfigError(f"{where}: oom_score_adj rule {n}: selectors are strings")
        if all(v is None for v in selectors.values()):
            raise ConfigError(f"{where}: oom_score_adj rule {n} selects nothing")
        adj.append(
            AdjRule(value=value, **{k: v for k, v in selectors.items() if isinstance(v, str)})
        )
    groups: list[GroupRule] = []
    for n, raw in enumerate(_tables(data.get("oom_group", []), where), 1):
        cgroup, value = raw.get("cgroup"), raw.get("value")
        if set(raw) - {"cgroup", "value"} or not isinstance(cgroup, str) or value not in (0, 1):
            raise ConfigError(
                f"{where}: oom_group rule {n}: needs cgroup (a pattern) and value 0 or 1"
            )
        groups.append(GroupRule(cgroup, bool(value)))
    return Policy(tuple(adj), tuple(groups))


def _tables(value: object, where: str) -> list[dict[str, object]]:
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise ConfigError(f"{where}: rules are arrays of tables ([[oom_score_adj]], [[oom_group]])")
    return value


class Reconciler:
    """Keeps ``policy`` on the processes and cgroups below ``proc_root`` /
    ``cgroup_root``; ``report`` gets every change (logged, counted, printed)."""

    def __init__(
        self,
        policy: Policy,
        *,
        dry_run: bool = False,
        names: PodNames | None = None,
        proc_root: Path = Path("/proc"),
        cgroup_root: Path = Path("/sys/fs/cgroup"),
        report: Callable[[Change], None] | None = None,
    ) -> None:
        self.policy = policy
        self.dry_run = dry_run
        self.names = names if names is not None else NoPodNames()
        self.proc_root = proc_root
        self.cgroup_root = cgroup_root
        self.report = (
            report if report is not None else (lambda change: log.info("%s", change.describe()))
        )
        #: processes settled: (pid, start time, cgroup, comm)
        self._done: set[tuple[int, int, str, str]] = set()
        self._groups_warned = False

    def reconcile(self) -> list[Change]:
        """One pass over every process (and cgroup, for ``oom_group`` rules)."""
        changes: list[Change] = []
        if self.policy.adj:
            seen: set[tuple[int, int, str, str]] = set()
            for entry in os.scandir(self.proc_root):
                if entry.name.isdigit():
                    change = self._process(int(entry.name), seen)
                    if change is not None:
                        changes.append(change)
            self._done &= seen  # forget processes that are gone
        if self.policy.groups:
            changes += self._groups()
        for change in changes:
            self.report(change)
        return changes

    def _process(self, pid: int, seen: set[tuple[int, int, str, str]]) -> Change | None:
        stat = read_stat(pid, self.proc_root)
        cgroup_text = read_text(self.proc_root / str(pid) / "cgroup")
        if stat is None or cgroup_text is None:
            return None
        comm, _ppid, flags, start = stat
        if flags & PF_KTHREAD:
            return None
        v2, v1 = parse_proc_cgroup(cgroup_text)
        cgroup = v1.get("memory") or v2 or "/"
        key = (pid, start, cgroup, comm)
        seen.add(key)
        if key in self._done:
            return None
        self._done.add(key)
        workload = workload_of_path(cgroup, self.names)
        rule = next((r for r in self.policy.adj if r.selects(cgroup, comm, workload)), None)
        if rule is None:
            return None
        adj_file = self.proc_root / str(pid) / "oom_score_adj"
        current = read_text(adj_file)
        if current is None or current.strip() == str(rule.value):
            return None
        target = f"pid {pid} ({comm}) in {cgroup}"
        old, new = current.strip(), str(rule.value)
        if self.dry_run:
            return Change("oom_score_adj", target, old, new, Outcome.WOULD_CHANGE)
        try:
            adj_file.write_text(new)
        except OSError as err:
            if err.errno in (errno.ESRCH, errno.ENOENT):
                return None  # gone meanwhile
            reason = os.strerror(err.errno) if err.errno else str(err)
            if err.errno in (errno.EACCES, errno.EPERM) and int(new) < int(old):
                reason += " (lowering oom_score_adj needs CAP_SYS_RESOURCE)"
            return Change("oom_score_adj", target, old, new, Outcome.REFUSED, reason)
        return Change("oom_score_adj", target, old, new, Outcome.CHANGED)

    def _groups(self) -> list[Change]:
        root = self.cgroup_root
        if not (root / "cgroup.controllers").exists():
            if self._groups_warned:
                return []
            self._groups_warned = True
            return [
                Change(
                    "memory.oom.group",
                    str(root),
                    "-",
                    "-",
                    Outcome.UNSUPPORTED,
                    "memory.oom.group needs cgroup v2; oom_group rules are ignored",
                )
            ]
        changes = []
        for directory, _dirs, files in os.walk(root):
            if "memory.oom.group" not in files:
                continue
            path = "/" + os.path.relpath(directory, root).removeprefix(".")
            rule = next(
                (r for r in self.policy.groups if fnmatch.fnmatchcase(path, r.cgroup)), None
            )
            if rule is None:
                continue
            target = Path(directory) / "memory.oom.group"
            current = (read_text(target) or "").strip()
            new = "1" if rule.value else "0"
            if current == new or not current:
                continue
            if self.dry_run:
                changes.append(Change("memory.oom.group", path, current, new, Outcome.WOULD_CHANGE))
                continue
            try:
                target.write_text(new)
            except OSError as err:
                changes.append(
                    Change(
                        "memory.oom.group",
                        path,
                        current,
                        new,
                        Outcome.REFUSED,
                        os.strerror(err.errno) if err.errno else str(err),
                    )
                )
                continue
            changes.append(Change("memory.oom.group", path, current, new, Outcome.CHANGED))
        return changes
