"""Explaining memory trouble: why a worker died, what the OOM killer sees, what to fix.

:mod:`~oomguard.diagnosis.classify` turns a worker's death and its evidence (wait status,
cgroup counters, the kernel's OOM report) into a failure class;
:mod:`~oomguard.diagnosis.proctree` reads the process tree as the OOM killer sees it;
:mod:`~oomguard.diagnosis.doctor` checks the machine (``oomguard doctor``). Builds on
:mod:`oomguard.cgroups`, :mod:`oomguard.kernlog` and :mod:`oomguard.procfs`, never the
other way round.
"""
