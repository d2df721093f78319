"""``oomguard agent``: the node agent (a systemd unit, a Kubernetes DaemonSet).

It reports every kernel OOM kill on the host, named by pod or unit, through webhooks,
Sentry and JSON logs, counts them on ``/metrics``, and keeps an OOM policy
(``--policy``). A thin command: it parses the options, builds
:class:`~oomguard.agent.service.AgentConfig` and the channels, and runs
:class:`~oomguard.agent.service.Agent` until SIGTERM or Ctrl-C. See docs/guide/agent.md.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path
from types import FrameType

import click

from oomguard.cli.options import env
from oomguard.errors import ConfigError
from oomguard.units import parse_duration


@click.command("agent")
@click.option(
    "--kernel-log",
    default="auto",
    metavar="SOURCE",
    show_default=True,
    help="Where kills are read: auto (/dev/kmsg, else the journal), kmsg, journal, or a log file.",
    **env("AGENT_KERNEL_LOG"),
)
@click.option(
    "--state",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Cursor file (kmsg sequence number of the last report delivered): a "
    "restart neither repeats nor misses a kill still in the kernel's buffer.",
    **env("AGENT_STATE"),
)
@click.option(
    "--lookback",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="On a start without a cursor, report the kills of this last stretch "
    "only (never everything since boot).",
    **env("AGENT_LOOKBACK"),
)
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Serve /metrics (Prometheus) and /healthz here.",
    **env("AGENT_LISTEN"),
)
@click.option(
    "--notify-url",
    multiple=True,
    metavar="URL",
    help="POST a signed JSON body per kill to URL (repeat for more). Prefer "
    "--notify-url-file or the environment: a URL here is visible to every local user.",
    **env("NOTIFY_URL"),
)
@click.option(
    "--notify-url-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File (mode 600) of webhook URLs, one a line.",
    **env("NOTIFY_URL_FILE"),
)
@click.option(
    "--notify-secret-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File (mode 600) holding the key that signs webhooks (Standard Webhooks); "
    "a second line: the next key, during a rotation.",
    **env("NOTIFY_SECRET_FILE"),
)
@click.option(
    "--sentry-dsn",
    default=None,
    metavar="DSN",
    help="Send every kill to Sentry, one issue per workload (needs: pip install "
    "'oomguard[sentry]').",
    **env("SENTRY_DSN"),
)
@click.option(
    "--sentry-dsn-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="File (mode 600) holding the Sentry DSN.",
    **env("SENTRY_DSN_FILE"),
)
@click.option(
    "--redact",
    multiple=True,
    metavar="REGEX",
    help="Replace what matches REGEX with [redacted] in webhook bodies and Sentry events (repeat).",
    **env("REDACT"),
)
@click.option(
    "--log-format",
    type=click.Choice(["plain", "json"]),
    default="plain",
    show_default=True,
    help="json: a JSON line on stderr per kill, and for every log record.",
    **env("LOG_FORMAT"),
)
@click.option(
    "--rate-limit",
    default="1m",
    show_default=True,
    metavar="DURATION",
    help="At most one notice per workload per DURATION; the kills held back are "
    "counted in the next one.",
    **env("AGENT_RATE_LIMIT"),
)
@click.option(
    "--kubelet-url",
    default=None,
    metavar="URL",
    help="Name pods from the kubelet's /pods (e.g. https://127.0.0.1:10250); "
    "without it, or when it cannot be reached, pods are named by UID.",
    **env("AGENT_KUBELET_URL"),
)
@click.option(
    "--kubelet-token-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Bearer token for the kubelet (a service account token).",
    **env("AGENT_KUBELET_TOKEN_FILE"),
)
@click.option(
    "--kubelet-ca-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="CA bundle of the kubelet's certificate.",
    **env("AGENT_KUBELET_CA_FILE"),
)
@click.option(
    "--kubelet-insecure",
    is_flag=True,
    default=False,
    help="Do not check the kubelet's certificate.",
    **env("AGENT_KUBELET_INSECURE"),
)
@click.option(
    "--node-name",
    default=None,
    metavar="NAME",
    help="The node's name in reports [default: the host name].",
    **env("NODE_NAME"),
)
@click.option(
    "--cgroup-root",
    type=click.Path(file_okay=False),
    default="/sys/fs/cgroup",
    show_default=True,
    help="Where the host's cgroup tree is mounted.",
    **env("AGENT_CGROUP_ROOT"),
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="OOM policy (TOML): oom_score_adj and memory.oom.group "
    "rules, applied at start and to new processes.",
    **env("AGENT_POLICY"),
)
@click.option(
    "--policy-interval",
    default="1s",
    show_default=True,
    metavar="DURATION",
    help="How often the policy is applied to new processes.",
    **env("AGENT_POLICY_INTERVAL"),
)
@click.option(
    "--dry-run",
    is_flag=True,
    default=False,
    help="Print what the policy would change; change nothing.",
    **env("AGENT_DRY_RUN"),
)
def agent_command(
    kernel_log: str,
    state: str | None,
    lookback: str,
    listen: str | None,
    notify_url: tuple[str, ...],
    notify_url_file: str | None,
    notify_secret_file: str | None,
    sentry_dsn: str | None,
    sentry_dsn_file: str | None,
    redact: tuple[str, ...],
    log_format: str,
    rate_limit: str,
    kubelet_url: str | None,
    kubelet_token_file: str | None,
    kubelet_ca_file: str | None,
    kubelet_insecure: bool,
    node_name: str | None,
    cgroup_root: str,
    policy_file: str | None,
    policy_interval: str,
    dry_run: bool,
) -> None:
    """Report every kernel OOM kill on this host, named by pod or unit, and keep an OOM
    policy (a systemd unit or a DaemonSet; see docs/guide/agent.md)."""
    from oomguard.agent.attribution import NoPodNames, PodNames
    from oomguard.agent.channels import Channel, JsonLogChannel, SentryChannel, WebhookChannel
    from oomguard.agent.metrics import parse_listen
    from oomguard.agent.policy import Change, Outcome, Reconciler, load_policy
    from oomguard.agent.service import Agent, AgentConfig
    from oomguard.cli.process import log_to_stderr
    from oomguard.notify.build import read_keys
    from oomguard.notify.secrets import Redactor, read_lines, read_secret_file, secret_parts

    log_to_stderr(log_format)
    logging.getLogger("oomguard.agent").setLevel(logging.INFO)
    urls = list(notify_url)
    if notify_url_file:
        urls += read_lines(notify_url_file, "--notify-url-file")
    if sentry_dsn_file:
        if sentry_dsn:
            raise ConfigError("--sentry-dsn and --sentry-dsn-file do not go together")
        sentry_dsn = read_secret_file(sentry_dsn_file, "--sentry-dsn-file")
    if listen:
        parse_listen(listen)
    keys = read_keys(notify_secret_file) if notify_secret_file else ()
    secrets = [
        part for url in (*urls, *([sentry_dsn] if sentry_dsn else [])) for part in secret_parts(url)
    ]
    redactor = Redactor(redact, [*secrets, *(k.decode("utf-8", "replace") for k in keys)])
    policy = load_policy(policy_file) if policy_file else None

    names: PodNames = NoPodNames()
    if kubelet_url:
        from oomguard.agent.kubelet import KubeletPods

        verify: str | bool = kubelet_ca_file or not kubelet_insecure
        names = KubeletPods(kubelet_url, token_file=kubelet_token_file, verify=verify)
    channels: list[Channel] = []
    if sentry_dsn:
        channels.append(SentryChannel(sentry_dsn, redactor=redactor))
    if urls:
        channels.append(WebhookChannel(urls, keys=keys, redactor=redactor))
    if log_format == "json":
        channels.append(JsonLogChannel())

    config = AgentConfig(
        kernel_log=kernel_log,
        state=Path(state) if state else None,
        lookback_s=parse_duration(lookback),
        listen=listen,
        cgroup_root=Path(cgroup_root),
        rate_limit_s=parse_duration(rate_limit),
        node=node_name or socket.gethostname(),
        policy_interval_s=parse_duration(policy_interval),
    )
    agent = Agent(config, channels=channels, names=names)
    if policy is not None:
        log = logging.getLogger("oomguard.agent")

        def report(change: Change) -> None:
            outcome = (
                "would_change" if change.outcome is Outcome.WOULD_CHANGE else change.outcome.value
            )
            agent.metrics.policy_changes.labels(change.setting, outcome).inc()
            if change.outcome is Outcome.WOULD_CHANGE:
                click.echo(change.describe())
            elif change.outcome is Outcome.CHANGED:
                log.info("%s", change.describe())
            else:
                log.warning("%s", change.describe())

        agent.policy = Reconciler(
            policy, dry_run=dry_run, names=names, cgroup_root=Path(cgroup_root), report=report
        )

    def stop(signum: int, frame: FrameType | None) -> None:
        agent.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    agent.run()
    sys.stderr.flush()


def register(cli: click.Group) -> None:
    cli.add_command(agent_command)
