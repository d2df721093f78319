"""``oomguard doctor``: what oomguard will do on this machine, and why.

Each check returns a :class:`Finding` (``ok``, ``warn`` or ``error``) with what was found
and what to change. Every check reads below ``proc_root`` / ``cgroup_root`` so unit tests
run them against fake trees; the few probes that must touch the real kernel (opening
``/dev/kmsg``, raising a child's ``oom_score_adj``) are injectable.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from oomguard.cgroups import v2
from oomguard.cgroups.detect import IsolationPlan, detect_isolation
from oomguard.cgroups.locate import DEFAULT_CGROUP_ROOT
from oomguard.procfs import cap_eff, machine_memory_bytes, meminfo, read_int, read_text
from oomguard.units import format_size

#: CAP_SYS_RESOURCE, the capability needed to lower an oom_score_adj.
CAP_SYS_RESOURCE = 24


@dataclass(frozen=True)
class Finding:
    """One doctor check: ``status`` is ``"ok"``, ``"warn"`` or ``"error"``."""

    name: str
    status: str
    found: str
    action: str = ""

    def to_json(self) -> dict[str, str]:
        """The finding as a JSON-ready dict."""
        return {
            "name": self.name,
            "status": self.status,
            "found": self.found,
            "action": self.action,
        }


@dataclass(frozen=True)
class DoctorReport:
    """The isolation plan and every finding."""

    isolation: IsolationPlan
    findings: tuple[Finding, ...]

    @property
    def ok(self) -> bool:
        """True when no finding is an error."""
        return all(f.status != "error" for f in self.findings)

    def to_json(self) -> dict[str, object]:
        """``{"isolation": ..., "findings": [...], "ok": ...}``."""
        return {
            "isolation": self.isolation.to_json(),
            "findings": [f.to_json() for f in self.findings],
            "ok": self.ok,
        }


def probe_raise_oom_score_adj() -> tuple[bool, str]:
    """Start a short-lived child and raise its ``oom_score_adj``; say whether it worked."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        path = Path("/proc") / str(child.pid) / "oom_score_adj"
        current = int(path.read_text().strip())
        target = min(current + 100, 1000)
        path.write_text(str(target))
        now = int(path.read_text().strip())
        return now == target, f"raised a child's oom_score_adj from {current} to {now}"
    except OSError as err:
        return False, f"cannot raise a child's oom_score_adj: {err.strerror or err}"
    finally:
        if child.stdin is not None:
            child.stdin.close()
        child.wait()


def probe_open_kmsg(path: Path = Path("/dev/kmsg")) -> tuple[bool, str]:
    """Try to open the kernel log device for reading (never read ``/proc/kmsg``)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as err:
        return False, f"{path} cannot be opened: {err.strerror or err}"
    os.close(fd)
    return True, f"{path} can be read"


def run_doctor(
    *,
    memory_budget: int | None = None,
    worker_memory: int | None = None,
    proc_root: Path = Path("/proc"),
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    pid: int | None = None,
    kmsg_probe: Callable[[], tuple[bool, str]] = probe_open_kmsg,
    score_adj_probe: Callable[[], tuple[bool, str]] = probe_raise_oom_score_adj,
    which: Callable[[str], str | None] = shutil.which,
) -> DoctorReport:
    """Run every check and return the report (nothing is changed on the machine)."""
    plan = detect_isolation("auto", proc_root=proc_root, cgroup_root=cgroup_root, pid=pid)
    info = meminfo(proc_root)
    who: int | str = pid if pid is not None else "self"
    findings = [
        _isolation(plan),
        _oom_group(plan),
        _kernel_log(proc_root, kmsg_probe, which),
        _score_adj_raise(score_adj_probe),
        _score_adj_lower(cap_eff(who, proc_root), proc_root / str(who) / "status"),
        _overcommit(proc_root),
        _swap(info, plan),
        _psi(proc_root),
        *_memory(plan, machine_memory_bytes(proc_root), memory_budget, worker_memory),
    ]
    return DoctorReport(plan, tuple(findings))


def _isolation(plan: IsolationPlan) -> Finding:
    if plan.mode == "watchdog":
        return Finding(
            "isolation",
            "warn",
            f"watchdog mode: {plan.reason}",
            "workers are stopped by oomguard's RSS watchdog, not the kernel; for kernel "
            "enforced limits run oomguard as root or in a delegated cgroup v2 subtree",
        )
    version = "v2" if plan.mode == "cgroup-v2" else "v1"
    return Finding("isolation", "ok", f"cgroup {version}: {plan.reason}")


def _oom_group(plan: IsolationPlan) -> Finding:
    if plan.own_oom_group is None:
        return Finding("oom_group", "ok", "memory.oom.group not set or not applicable here")
    if not plan.own_oom_group:
        return Finding("oom_group", "ok", "memory.oom.group=0 on oomguard's own cgroup")
    warning = next((w for w in plan.warnings if "memory.oom.group" in w), "")
    return Finding(
        "oom_group",
        "warn",
        "memory.oom.group=1 on oomguard's own cgroup",
        warning or "keep the memory budget below the container limit",
    )


def _kernel_log(
    proc_root: Path, kmsg_probe: Callable[[], tuple[bool, str]], which: Callable[[str], str | None]
) -> Finding:
    ok, what = kmsg_probe()
    restrict = read_int(proc_root / "sys" / "kernel" / "dmesg_restrict")
    journal = which("journalctl")
    parts = [what, f"dmesg_restrict={restrict if restrict is not None else 'unknown'}"]
    parts.append(f"journalctl at {journal}" if journal else "no journalctl")
    found = "; ".join(parts)
    if ok:
        return Finding("kernel_log", "ok", found)
    if journal:
        return Finding(
            "kernel_log",
            "warn",
            found,
            "OOM evidence will come from journalctl -k, which may lag or lack the kernel "
            "lines; give oomguard CAP_SYSLOG or set kernel.dmesg_restrict=0",
        )
    return Finding(
        "kernel_log",
        "warn",
        found,
        "system OOM kills cannot be told from other SIGKILLs; give oomguard CAP_SYSLOG, "
        "set kernel.dmesg_restrict=0 or install journald",
    )


def _score_adj_raise(probe: Callable[[], tuple[bool, str]]) -> Finding:
    ok, what = probe()
    if ok:
        return Finding("oom_score_adj_raise", "ok", what)
    return Finding(
        "oom_score_adj_raise",
        "warn",
        what,
        "the kernel may pick the scheduler instead of a worker on a system OOM; "
        "check that /proc is mounted read-write",
    )


def _score_adj_lower(caps: int | None, status_path: Path) -> Finding:
    if caps is None:
        return Finding("oom_score_adj_lower", "warn", f"cannot read CapEff from {status_path}")
    if caps >> CAP_SYS_RESOURCE & 1:
        return Finding(
            "oom_score_adj_lower", "ok", "CAP_SYS_RESOURCE held: the scheduler can protect itself"
        )
    return Finding(
        "oom_score_adj_lower",
        "warn",
        "no CAP_SYS_RESOURCE: oom_score_adj can be raised (workers) but not lowered (scheduler)",
        "workers still die first because their score is raised; to also shield the "
        "scheduler, grant CAP_SYS_RESOURCE",
    )


def _overcommit(proc_root: Path) -> Finding:
    mode = read_int(proc_root / "sys" / "vm" / "overcommit_memory")
    if mode == 0:
        return Finding("overcommit", "ok", "vm.overcommit_memory=0 (heuristic)")
    if mode == 1:
        return Finding(
            "overcommit",
            "warn",
            "vm.overcommit_memory=1 (always): allocations never fail, tasks get OOM-killed "
            "instead of raising MemoryError",
            "nothing to change for oomguard; expect oom_* failures rather than memory_error",
        )
    if mode == 2:
        return Finding(
            "overcommit",
            "warn",
            "vm.overcommit_memory=2 (strict): large reservations fail with MemoryError "
            "even when memory is free",
            "raise vm.overcommit_ratio or use mode 0 if tasks fail with memory_error",
        )
    return Finding("overcommit", "warn", "vm.overcommit_memory cannot be read")


def _swap(info: dict[str, int], plan: IsolationPlan) -> Finding:
    total = info.get("SwapTotal")
    if total is None:
        return Finding("swap", "warn", "SwapTotal missing from /proc/meminfo")
    if total == 0:
        return Finding("swap", "ok", "no swap: memory limits are hard limits")
    found = f"swap of {format_size(total)}"
    own = plan.own_cgroup
    if plan.mode == "cgroup-v1" and own and not (own / "memory.memsw.limit_in_bytes").exists():
        return Finding(
            "swap",
            "warn",
            f"{found} and no swap accounting (memory.memsw.*): a worker at its limit swaps "
            "instead of being OOM-killed",
            "boot with swapaccount=1, or turn swap off",
        )
    return Finding("swap", "ok", f"{found}; worker cgroups get no swap")


def _psi(proc_root: Path) -> Finding:
    text = read_text(proc_root / "pressure" / "memory")
    if text is None:
        return Finding(
            "psi",
            "warn",
            "/proc/pressure/memory is missing: memory pressure cannot be measured",
            "boot a kernel with CONFIG_PSI=y (and psi=1 where it is off by default)",
        )
    some = v2.parse_pressure(text).get("some", {}).get("avg10")
    return Finding("psi", "ok", f"memory pressure available (some avg10={some})")


def _memory(
    plan: IsolationPlan,
    machine: int | None,
    budget: int | None,
    worker: int | None,
) -> list[Finding]:
    limit = plan.own_limit_bytes
    parts = [f"machine memory {format_size(machine)}" if machine else "machine memory unknown"]
    parts.append(
        f"memory limit of oomguard's cgroup {format_size(limit)}"
        if limit is not None
        else "no memory limit on oomguard's cgroup"
    )
    findings = [Finding("memory", "ok", "; ".join(parts))]
    for name, value in (("memory_budget", budget), ("worker_memory", worker)):
        if value is None:
            continue
        label = name.replace("_", " ")
        if limit is not None and value > limit:
            findings.append(
                Finding(
                    name,
                    "error",
                    f"{label} {format_size(value)} is larger than the memory limit of "
                    f"oomguard's cgroup ({format_size(limit)})",
                    f"set the {label} below {format_size(limit)}",
                )
            )
        elif machine is not None and value > machine:
            findings.append(
                Finding(
                    name,
                    "error",
                    f"{label} {format_size(value)} is larger than this machine's memory "
                    f"({format_size(machine)})",
                    f"set the {label} below {format_size(machine)}",
                )
            )
        else:
            findings.append(Finding(name, "ok", f"{label} {format_size(value)} fits"))
    if budget is not None and worker is not None and worker > budget:
        findings.append(
            Finding(
                "worker_memory_vs_budget",
                "warn",
                f"worker memory {format_size(worker)} is larger than the memory budget "
                f"{format_size(budget)}",
                "a worker can never use its full limit; lower the worker memory or raise "
                "the budget",
            )
        )
    return findings
