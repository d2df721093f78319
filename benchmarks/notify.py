"""Notifications: what they cost the scheduler loop, how fast they go out, and what a dead
receiver costs.

Questions:

1. How long does ``notify()`` take on the loop's thread (it only queues)?
2. How many notifications per second does one webhook URL deliver to a receiver on
   127.0.0.1 (signed, one POST each, in order), and how many events per second go through
   the real sentry-sdk to a Sentry stand-in on 127.0.0.1?
3. With a receiver that never answers, what do 100,000 notifications cost in memory
   (default queue: 1,000)?
4. How much slower is a sweep of no-op tasks with every notification channel on (JSON
   lines, a webhook, Sentry: one notice per attempt), next to none?

Command (about a minute on 2 cores):

    .venv/bin/python benchmarks/notify.py --n 5000 --tasks 10000

The receivers run in a subprocess of their own (HTTP/1.1, keep-alive), so they do not share
this process's GIL with the delivery threads being measured.
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
from _common import MIB, RssSampler, emit, table

from oomguard.notify import AttemptNotice

RECEIVER = r"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import threading
count = 0
lock = threading.Lock()

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        global count
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            count += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        body = str(count).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"""


def notice(i: int, message: str = "RuntimeError: boom") -> AttemptNotice:
    return AttemptNotice.of(
        job_id="bench",
        task_id=i,
        attempt_id=i,
        attempt=1,
        function="oomguard.examples:fail",
        outcome="failed",
        failure_class="error",
        final_class="error",
        message=message,
        memory_key="oomguard.examples:fail",
        limit_bytes=256 * MIB,
        peak_bytes=12 * MIB,
        worker="w1",
        evidence={"traceback": "Traceback (most recent call last):\n  ...\n" + message},
    )


def start_receiver() -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(10)


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not met")
        time.sleep(0.005)


def enqueue_cost(n: int) -> float:
    """Microseconds per notify() to a webhook notifier whose receiver is down."""
    from oomguard.notify.webhook import WebhookNotifier

    notifier = WebhookNotifier([f"http://127.0.0.1:{dead_port()}/"], on=["failed"])
    notices = [notice(i) for i in range(n)]
    t0 = time.perf_counter()
    for item in notices:
        notifier.notify(item)
    elapsed = time.perf_counter() - t0
    notifier.close(0.1)
    return elapsed / n * 1e6


def dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def webhook_rate(n: int) -> dict[str, Any]:
    from oomguard.notify.webhook import WebhookNotifier

    proc, port = start_receiver()
    try:
        url = f"http://127.0.0.1:{port}/hook"
        notifier = WebhookNotifier([url], on=["failed"], keys=[b"k"], queue_size=n)
        (receiver,) = notifier.receivers
        t0 = time.perf_counter()
        for i in range(n):
            notifier.notify(notice(i))
        wait_until(lambda: receiver.outbox.stats().delivered == n, timeout=300)
        elapsed = time.perf_counter() - t0
        notifier.close(5)
    finally:
        stop(proc)
    return {"notifications": n, "seconds": elapsed, "per_second": n / elapsed}


def sentry_rate(n: int) -> dict[str, Any] | None:
    try:
        from oomguard.notify.sentry import SentryNotifier
    except ImportError:
        return None
    proc, port = start_receiver()
    try:
        notifier = SentryNotifier(f"http://key@127.0.0.1:{port}/1", queue_size=n)
        t0 = time.perf_counter()
        for i in range(n):
            notifier.notify(notice(i))
        wait_until(lambda: notifier.outbox.stats().delivered == n, timeout=300)
        handed = time.perf_counter() - t0
        notifier.client.flush(timeout=300)  # the SDK's transport sent what it kept
        elapsed = time.perf_counter() - t0
        notifier.close(5)
        received = int(httpx.get(f"http://127.0.0.1:{port}/count").text)
    finally:
        stop(proc)
    return {"events": n, "received": received, "seconds": elapsed,
            "per_second": received / elapsed, "handed_to_sdk_per_second": n / handed}


def dead_receiver_memory(n: int, queue: int) -> dict[str, Any]:
    """``n`` notices of ~2 KB each to a receiver that refuses every connection."""
    from oomguard.notify.webhook import WebhookNotifier

    url = f"http://127.0.0.1:{dead_port()}/hook"
    sampler = RssSampler()
    rss0 = sampler.rss()
    notifier = WebhookNotifier([url], on=["failed"], queue_size=queue)
    (receiver,) = notifier.receivers
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(n):
        notifier.notify(notice(i, message="x" * 1500 + str(i)))
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rss1 = sampler.rss()
    stats = receiver.outbox.stats()  # notifier.stats() names a receiver, never its URL
    notifier.close(0.2)
    return {
        "notifications": n,
        "queue": queue,
        "held_bytes": held,
        "rss_growth_bytes": rss1 - rss0,
        "kept": stats.queued,
        "dropped": stats.dropped,
    }


def sweep(tasks: int, channels: bool) -> dict[str, Any]:
    import oomguard

    tmp = tempfile.mkdtemp(prefix="oomguard-bench-")
    options: dict[str, Any] = {}
    procs = []
    if channels:
        hook, hook_port = start_receiver()
        relay, relay_port = start_receiver()
        procs = [hook, relay]
        options = {
            "log_format": "json",
            "notify_url": [f"http://127.0.0.1:{hook_port}/hook"],
            "notify_on": ["failed", "final", "job"],
            "sentry_dsn": f"http://key@127.0.0.1:{relay_port}/1",
        }
    stderr = sys.stderr
    captured = io.StringIO()
    sys.stderr = captured if channels else stderr  # the JSON lines, kept out of sight
    try:
        with oomguard.Runner(store=os.path.join(tmp, "s.sqlite"), workers=2, **options) as r:
            t0 = time.perf_counter()
            job = r.sweep("oomguard.examples:noop", ({"x": i} for i in range(tasks)))
            job.wait(progress=False)
            elapsed = time.perf_counter() - t0
        lines = captured.getvalue().count("\n") if channels else 0
    finally:
        sys.stderr = stderr
        for proc in procs:
            stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return {"tasks": tasks, "seconds": elapsed, "per_second": tasks / elapsed,
            "json_lines": lines}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="notifications per delivery run")
    parser.add_argument("--dead", type=int, default=100_000, help="notifications to a dead URL")
    parser.add_argument("--tasks", type=int, default=10000, help="no-op tasks per sweep")
    args = parser.parse_args()

    results: dict[str, Any] = {}
    results["notify_us"] = enqueue_cost(50_000)
    results["webhook"] = webhook_rate(args.n)
    results["sentry"] = sentry_rate(args.n)
    results["dead_receiver"] = dead_receiver_memory(args.dead, 1000)
    results["sweep_without"] = sweep(args.tasks, channels=False)
    results["sweep_with_all_channels"] = sweep(args.tasks, channels=True)

    dead = results["dead_receiver"]
    rows = [
        ["notify() on the loop thread", f"{results['notify_us']:.2f} µs"],
        ["webhook deliveries (signed POSTs, one URL)",
         f"{results['webhook']['per_second']:,.0f}/s"],
    ]
    if results["sentry"]:
        sent = results["sentry"]
        rows.append(["Sentry events (sentry-sdk to 127.0.0.1)",
                     f"{sent['per_second']:,.0f}/s ({sent['received']:,} of {sent['events']:,} "
                     "arrived)"])
    rows += [
        [f"dead receiver, {dead['notifications']:,} notifications: held",
         f"{dead['held_bytes'] / MIB:.2f} MiB (RSS +{dead['rss_growth_bytes'] / MIB:.1f} MiB); "
         f"{dead['kept']:,} kept, {dead['dropped']:,} dropped"],
        [f"{args.tasks:,} no-op tasks, no notifications",
         f"{results['sweep_without']['per_second']:,.0f} tasks/s"],
        [f"{args.tasks:,} no-op tasks, JSON lines + webhook + Sentry",
         f"{results['sweep_with_all_channels']['per_second']:,.0f} tasks/s "
         f"({results['sweep_with_all_channels']['json_lines']:,} JSON lines)"],
    ]
    print(table(["question", "measured"], rows))
    emit("notify", args, results)


if __name__ == "__main__":
    main()
