"""The node agent (``oomguard agent``): every kernel OOM kill on a host reported where
people look, named by pod or unit, and an OOM policy kept on the node.

One module per concept: :mod:`~oomguard.agent.reader` (kernel log sources with their
positions, the kills in them), :mod:`~oomguard.agent.cursor` (how far reports were
delivered), :mod:`~oomguard.agent.attribution` (the workload a memcg path names, the
trigger) with :mod:`~oomguard.agent.kubelet` (pod names), :mod:`~oomguard.agent.severity`,
:mod:`~oomguard.agent.report` (one kill as reported), :mod:`~oomguard.agent.ratelimit`,
:mod:`~oomguard.agent.channels` (webhooks, Sentry, JSON logs),
:mod:`~oomguard.agent.metrics` (``/metrics``, ``/healthz``),
:mod:`~oomguard.agent.policy` (``oom_score_adj`` and ``memory.oom.group`` kept), and
:mod:`~oomguard.agent.service` (the loop). It sits at the level of the CLI: it uses
kernlog, cgroups, notify and procfs; nothing but :mod:`oomguard.cli.agent` imports it.
"""
