"""Pod names from the kubelet's ``/pods`` (the pods bound to this node, with their
containers' IDs): the optional :class:`~oomguard.agent.attribution.PodNames` behind
``--kubelet-url``.

A kubelet that cannot be reached, refuses the agent or answers nonsense gives no names:
the pod is reported by its UID, the failure logged once and counted, never raised. The
list is fetched again when a UID is not in it (a new pod), at most every
``refresh_s`` seconds.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from oomguard.agent.attribution import PodName

__all__ = ["KubeletPods", "parse_pods"]

log = logging.getLogger("oomguard.agent")


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def parse_pods(data: object) -> dict[str, PodName]:
    """Pods by UID from a ``PodList`` (what ``/pods`` answers); what it cannot read, it
    leaves out."""
    pods: dict[str, PodName] = {}
    items = data.get("items") if isinstance(data, dict) else None
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        meta = item.get("metadata")
        status = item.get("status")
        if not isinstance(meta, dict):
            continue
        uid, namespace, name = (
            _str(meta.get("uid")),
            _str(meta.get("namespace")),
            _str(meta.get("name")),
        )
        if not uid or not name:
            continue
        containers: list[tuple[str, str]] = []
        for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
            found = status.get(key) if isinstance(status, dict) else None
            for one in found if isinstance(found, list) else []:
                if not isinstance(one, dict):
                    continue
                cid, cname = _str(one.get("containerID")), _str(one.get("name"))
                if cid and cname:
                    containers.append((cid.rpartition("://")[2], cname))
        pods[uid.lower()] = PodName(namespace or "", name, tuple(containers))
    return pods


class KubeletPods:
    """Names from the kubelet at ``url`` (``https://127.0.0.1:10250``), with the service
    account token in ``token_file``; ``verify``: a CA bundle path, or False."""

    def __init__(
        self,
        url: str,
        *,
        token_file: str | None = None,
        verify: str | bool = True,
        timeout: float = 2.0,
        refresh_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url.rstrip("/") + "/pods"
        self.token_file = token_file
        self.refresh_s = refresh_s
        self._clock = clock
        self._pods: dict[str, PodName] = {}
        self._fetched_at: float | None = None
        self._warned = False
        self.errors = 0
        self.client = httpx.Client(timeout=timeout, verify=verify)

    def lookup(self, pod_uid: str) -> PodName | None:
        uid = pod_uid.lower()
        if uid not in self._pods:
            now = self._clock()
            if self._fetched_at is None or now - self._fetched_at >= self.refresh_s:
                self._fetched_at = now
                self._refresh()
        return self._pods.get(uid)

    def _refresh(self) -> None:
        headers = {}
        try:
            if self.token_file:
                headers["Authorization"] = "Bearer " + Path(self.token_file).read_text().strip()
            response = self.client.get(self.url, headers=headers)
            response.raise_for_status()
            self._pods = parse_pods(json.loads(response.content))
        except (OSError, httpx.HTTPError, ValueError) as err:
            self.errors += 1
            if not self._warned:
                self._warned = True
                log.warning("kubelet %s: %s; pods are named by their UID", self.url, err)

    def close(self) -> None:
        self.client.close()
