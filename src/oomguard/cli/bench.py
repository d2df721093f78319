"""``oomguard bench``: a load generator for ``oomguard serve``.

Submits ``--tasks`` tasks at ``--rate`` tasks/s in batches of ``--batch`` (one job per
batch, refusals are counted, not retried), waits for the accepted ones to finish, and
reports accepted/rejected/completed, submit latency and the server's peak RSS (sampled
from ``/metrics``). Without ``--server`` it starts ``oomguard serve`` on a free loopback
port with a temporary store and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import click

from oomguard.cli.exit_codes import ExitCode
from oomguard.cli.options import env, json_option, started_server_options, token_option
from oomguard.cli.process import terminate
from oomguard.errors import BackpressureError, OomguardError
from oomguard.jobs.jsonvalue import JSON


def _count(counts: JSON, key: str) -> int:
    """A job's count of tasks in state ``key`` (its answer's ``counts``)."""
    value = counts.get(key) if isinstance(counts, dict) else None
    return value if isinstance(value, int) else 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def spawned_server(args: list[str], startup_timeout: float = 60.0) -> Iterator[tuple[str, int]]:
    """Start ``oomguard serve`` on a free port with a temporary store; yield (url, pid)."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="oomguard-bench-") as tmp:
        port = free_port()
        cmd = [
            sys.executable,
            "-m",
            "oomguard.cli.main",
            "serve",
            "--store",
            os.path.join(tmp, "bench.sqlite"),
            "--listen",
            f"127.0.0.1:{port}",
            *args,
        ]
        log = open(os.path.join(tmp, "serve.log"), "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_timeout
            while True:
                if proc.poll() is not None:
                    log.close()
                    with open(os.path.join(tmp, "serve.log"), errors="replace") as fh:
                        raise OomguardError(
                            f"oomguard serve exited with {proc.returncode}: {fh.read()[-2000:]}"
                        )
                try:
                    if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise OomguardError(f"oomguard serve did not start in {startup_timeout}s")
                time.sleep(0.1)
            yield url, proc.pid
        finally:
            terminate(proc, 30)
            log.close()


@dataclass
class BenchResult:
    accepted: int = 0
    rejected: int = 0
    rejected_by: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    completed: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    peak_rss: int = 0
    rss_limit: int = 0
    submit_seconds: float = 0.0
    total_seconds: float = 0.0
    timed_out: bool = False
    jobs: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def percentile(self, p: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000

    def to_json(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "rejected": self.rejected,
            "rejected_by": self.rejected_by,
            "errors": self.errors,
            "completed": self.completed,
            "failed": self.failed,
            "all_accepted_completed": self.accepted == self.completed + self.failed
            and not self.timed_out,
            "submit_p50_ms": round(self.percentile(50), 2),
            "submit_p99_ms": round(self.percentile(99), 2),
            "peak_rss_bytes": self.peak_rss,
            "scheduler_memory_limit_bytes": self.rss_limit,
            "submit_seconds": round(self.submit_seconds, 2),
            "total_seconds": round(self.total_seconds, 2),
            "timed_out": self.timed_out,
        }


def run_bench(
    url: str,
    token: str | None,
    task: str,
    tasks: int,
    rate: float,
    batch: int,
    namespace: str,
    timeout: float,
) -> BenchResult:
    from oomguard.api.client import ApiClient, ApiError, parse_metric

    result = BenchResult()
    stop = threading.Event()
    start = time.monotonic()
    deadline = start + timeout

    def sample() -> None:
        with ApiClient(url, token, timeout=10) as client:
            while not stop.is_set():
                with contextlib.suppress(OomguardError):
                    text = client.metrics()
                    rss = parse_metric(text, "oomguard_scheduler_rss_bytes")
                    limit = parse_metric(text, "oomguard_scheduler_memory_limit_bytes")
                    if rss is not None:
                        result.peak_rss = max(result.peak_rss, int(rss))
                    if limit is not None:
                        result.rss_limit = int(limit)
                stop.wait(0.25)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    local = threading.local()

    def one(n: int) -> None:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = ApiClient(url, token, timeout=60)
        body = {"task": task, "count": n, "namespace": namespace, "name": "bench"}
        t0 = time.perf_counter()
        try:
            job = client.post("/v1/jobs", body, retry=False)
            code = None
        except BackpressureError as err:
            code = str(getattr(err, "code", "rejected"))
        except (ApiError, OomguardError):
            code = "error"
        elapsed = time.perf_counter() - t0
        with result.lock:
            result.latencies.append(elapsed)
            if code is None:
                result.accepted += n
                result.jobs.append(str(job["job_id"]))
            elif code == "error":
                result.errors += n
            else:
                result.rejected += n
                result.rejected_by[code] = result.rejected_by.get(code, 0) + n

    try:
        with ThreadPoolExecutor(max_workers=8) as pool:
            sent = 0
            while sent < tasks and time.monotonic() < deadline:
                due = start + sent / rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                n = min(batch, tasks - sent)
                pool.submit(one, n)
                sent += n
        result.submit_seconds = time.monotonic() - start
        with ApiClient(url, token, timeout=30) as client:
            for job_id in list(result.jobs):
                while True:
                    status = client.get(f"/v1/jobs/{job_id}")
                    if status["state"] not in ("waiting", "running"):
                        counts = status.get("counts")
                        result.completed += _count(counts, "succeeded")
                        result.failed += _count(counts, "failed") + _count(counts, "cancelled")
                        break
                    if time.monotonic() > deadline:
                        result.timed_out = True
                        break
                    time.sleep(0.2)
                if result.timed_out:
                    break
    finally:
        stop.set()
        sampler.join()
    result.total_seconds = time.monotonic() - start
    return result


@click.command()
@click.option(
    "--server",
    default=None,
    metavar="URL",
    **env("SERVER"),
    help="server to load [default: start one on a free loopback port]",
)
@token_option()
@click.option("--task", default="oomguard.examples:noop", show_default=True, **env("TASK"))
@click.option(
    "--tasks",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    **env("TASKS"),
    help="tasks to submit",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=1),
    default=10_000,
    show_default=True,
    **env("RATE"),
    help="target tasks per second",
)
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    **env("BATCH"),
    help="tasks per request",
)
@click.option("--namespace", default="default", show_default=True, **env("NAMESPACE"))
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=900,
    show_default=True,
    **env("BENCH_TIMEOUT"),
    help="seconds after which the bench stops by itself",
)
@started_server_options
@json_option("Print one JSON object.")
def bench(
    server: str | None,
    token_file: str | None,
    task: str,
    tasks: int,
    rate: float,
    batch: int,
    namespace: str,
    timeout: float,
    workers: int | None,
    max_pending_tasks: int,
    scheduler_memory_limit: str | None,
    as_json: bool,
) -> None:
    """Load a server with TASKS tasks at RATE tasks/s and report what it did."""
    from oomguard.api.client import ApiError, ServerConnectionError, load_token
    from oomguard.cli.client import exit_code_for_client
    from oomguard.units import format_size

    token = load_token(token_file)
    try:
        if server is None:
            args = ["--max-pending-tasks", str(max_pending_tasks)]
            if workers is not None:
                args += ["--workers", str(workers)]
            if scheduler_memory_limit is not None:
                args += ["--scheduler-memory-limit", scheduler_memory_limit]
            with spawned_server(args) as (url, _pid):
                result = run_bench(url, None, task, tasks, rate, batch, namespace, timeout)
        else:
            result = run_bench(server, token, task, tasks, rate, batch, namespace, timeout)
    except (ApiError, ServerConnectionError) as err:
        click.echo(f"oomguard: error: {err}", err=True)
        raise SystemExit(int(exit_code_for_client(err))) from None
    out = result.to_json()
    if as_json:
        click.echo(json.dumps(out))
    else:
        click.echo(
            f"accepted {out['accepted']}, rejected {out['rejected']} "
            f"{out['rejected_by'] or ''}, completed {out['completed']}, "
            f"failed {out['failed']}"
        )
        click.echo(
            f"submit latency p50 {out['submit_p50_ms']} ms, p99 {out['submit_p99_ms']} ms;"
            f" submitted in {out['submit_seconds']} s, total {out['total_seconds']} s"
        )
        click.echo(
            f"scheduler peak RSS {format_size(result.peak_rss)} "
            f"(limit {format_size(result.rss_limit)})"
        )
        if not out["all_accepted_completed"]:
            click.echo("oomguard: not every accepted task finished", err=True)
    if not out["all_accepted_completed"]:
        raise SystemExit(int(ExitCode.TASKS_FAILED))


def register(cli: click.Group) -> None:
    cli.add_command(bench)


__all__ = ["bench", "register", "run_bench", "spawned_server"]
