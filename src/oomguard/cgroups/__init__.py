"""Memory cgroups: reading them, detecting how workers can be isolated, worker cgroups.

:mod:`~oomguard.cgroups.v1` and :mod:`~oomguard.cgroups.v2` know the kernel's file
formats; :mod:`~oomguard.cgroups.locate` finds a process's memory cgroup and its limits;
:mod:`~oomguard.cgroups.info` inspects a cgroup and its ancestors (``oomguard oom
cgroup``); :mod:`~oomguard.cgroups.cgroup` is one cgroup oomguard manages and its counters;
:mod:`~oomguard.cgroups.detect` decides the isolation mode; :mod:`~oomguard.cgroups.workers`
builds and removes the workers' subtree. Uses only :mod:`oomguard.procfs` and the errors.
"""
