"""The agent's metrics and health, served on ``--listen HOST:PORT``: ``/metrics``
(Prometheus) and ``/healthz`` (JSON; 503 once the reader has failed or gone quiet).

Kill counters are keyed by namespace, pod, container, unit, command, trigger and
severity; they live in the agent, not in the container's cgroup, so they outlive the
container (cAdvisor's counter goes with the cgroup). A pod the kubelet cannot name is
labelled by its UID.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from oomguard.agent.report import KillReport
from oomguard.errors import ConfigError

__all__ = ["AgentMetrics", "Health", "HealthServer", "parse_listen"]

KILL_LABELS = ("namespace", "pod", "container", "unit", "command", "trigger", "severity")


class AgentMetrics:
    """Every metric of one agent, in its own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.kills = Counter(
            "oomguard_agent_oom_kills",
            "Kernel OOM kills seen on this node.",
            KILL_LABELS,
            registry=r,
        )
        self.notifications = Counter(
            "oomguard_agent_notifications",
            "Kill notices sent, by channel and outcome.",
            ("channel", "outcome"),
            registry=r,
        )
        self.suppressed = Counter(
            "oomguard_agent_notifications_suppressed",
            "Kill notices held back by the per-workload rate limit (counted in the next notice).",
            registry=r,
        )
        self.records = Counter(
            "oomguard_agent_log_lines_read", "Kernel log lines read.", registry=r
        )
        self.records_lost = Counter(
            "oomguard_agent_log_records_lost",
            "kmsg records overwritten before they were read.",
            registry=r,
        )
        self.reader_errors = Counter(
            "oomguard_agent_reader_errors",
            "Failures reading or parsing the kernel log.",
            registry=r,
        )
        self.last_read = Gauge(
            "oomguard_agent_last_read_timestamp_seconds",
            "Unix time the agent last read the kernel log (also when it was idle).",
            registry=r,
        )
        self.policy_changes = Counter(
            "oomguard_agent_policy_changes",
            "Policy changes made (or, with --dry-run, that would be made), by setting and outcome.",
            ("setting", "outcome"),
            registry=r,
        )

    def count_kill(self, report: KillReport) -> None:
        w = report.workload
        self.kills.labels(
            namespace=w.namespace or "",
            pod=w.pod or w.pod_uid or "",
            container=w.container or w.container_id or "",
            unit=w.unit or "",
            command=report.command,
            trigger=report.trigger.value,
            severity=report.severity.value,
        ).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass
class Health:
    """What ``/healthz`` says: the reader's source, when it last read, its errors."""

    source: str = ""
    started_at: float = 0.0
    last_read_at: float | None = None
    last_line_at: float | None = None
    lines_read: int = 0
    kills_seen: int = 0
    reader_errors: int = 0
    last_error: str | None = None
    failed: bool = False

    def body(self) -> dict[str, object]:
        return {
            "ok": not self.failed,
            "source": self.source,
            "last_read_at": self.last_read_at,
            "last_line_at": self.last_line_at,
            "lines_read": self.lines_read,
            "kills_seen": self.kills_seen,
            "reader_errors": self.reader_errors,
            "last_error": self.last_error,
        }


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9100`` for IPv6); ConfigError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen {text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class HealthServer:
    """``/metrics`` and ``/healthz`` on a thread (two read-only routes: the standard
    library's server is enough, with a read timeout so a slow client holds nothing)."""

    def __init__(self, listen: str, metrics: AgentMetrics, health: Callable[[], Health]) -> None:
        host, port = parse_listen(listen)

        class Handler(BaseHTTPRequestHandler):
            timeout = 10

            def do_GET(self) -> None:
                if self.path.split("?")[0] == "/metrics":
                    self._answer(200, metrics.exposition(), CONTENT_TYPE_LATEST)
                elif self.path.split("?")[0] == "/healthz":
                    state = health()
                    body = json.dumps(state.body()).encode()
                    self._answer(503 if state.failed else 200, body, "application/json")
                else:
                    self._answer(404, b"not found\n", "text/plain")

            def _answer(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        try:
            self.server = ThreadingHTTPServer((host, port), Handler)
        except OSError as err:
            raise ConfigError(f"--listen {listen}: {err.strerror or err}") from None
        self.server.daemon_threads = True
        self.address = f"{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(
            target=self.server.serve_forever, name="oomguard-agent-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
