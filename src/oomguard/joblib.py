"""The joblib parallel backend ``"oomguard"``: ``import oomguard.joblib`` registers it.

::

    import joblib, oomguard.joblib
    with joblib.parallel_config(backend="oomguard", n_jobs=4, worker_memory="2GiB"):
        results = joblib.Parallel()(joblib.delayed(fit)(x) for x in data)

Each ``Parallel`` call runs on an :class:`oomguard.Executor` of ``n_jobs`` workers (the
backend's keywords are the Executor's: ``worker_memory``, ``memory_budget``, ``retries``,
``store``, ...). A batch OOM-killed at its limit runs again with more memory; one that
cannot fit raises :class:`oomguard.CallMemoryError` (a ``MemoryError``) from
``Parallel`` instead of loky's ``TerminatedWorkerError``. The workers' thread pools are
limited as loky limits them (``OMP_NUM_THREADS`` and friends: cpus // n_jobs).
"""

from __future__ import annotations

import concurrent.futures
import inspect
import os
from collections.abc import Callable

try:
    import joblib
    from joblib._parallel_backends import (
        AutoBatchingMixin,
        FallbackToBackend,
        ParallelBackendBase,
        SequentialBackend,
    )
except ImportError as err:  # pragma: no cover - depends on what is installed
    raise ImportError("oomguard.joblib needs joblib: pip install 'oomguard[joblib]'") from err

from oomguard.executor import Executor

NAME = "oomguard"


def limit_threads(env: dict[str, str]) -> None:
    """In a worker, before its first call: the thread pools' sizes, as loky sets them."""
    os.environ.update(env)


class OomguardBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]
    """Runs joblib's batches on an :class:`oomguard.Executor`."""

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True

    def __init__(
        self,
        nesting_level: int | None = None,
        inner_max_num_threads: int | None = None,
        **executor_options: object,
    ) -> None:
        super().__init__(
            nesting_level=nesting_level,
            inner_max_num_threads=inner_max_num_threads,
            **executor_options,
        )
        self._executor: Executor | None = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max((os.cpu_count() or 1) + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: object = None, **backend_args: object) -> int:
        n = self.effective_n_jobs(n_jobs)
        if n == 1:
            raise FallbackToBackend(SequentialBackend(nesting_level=self.nesting_level))
        # Parallel passes its memmapping options (max_nbytes, mmap_mode, ...) to every
        # backend: the Executor's own are kept, the user's backend keywords all are.
        known = inspect.signature(Executor).parameters
        options: dict[str, object] = {k: v for k, v in backend_args.items() if k in known}
        options.update(self.backend_kwargs)
        env: dict[str, str] = self._prepare_worker_env(n_jobs=n)
        self._executor = Executor(
            n,
            initializer=limit_threads,
            initargs=(env,),
            **options,  # type: ignore[arg-type]
        )
        self.parallel = parallel
        return n

    def submit(
        self,
        func: Callable[[], object],
        callback: Callable[[concurrent.futures.Future[object]], object] | None = None,
    ) -> concurrent.futures.Future[object]:
        assert self._executor is not None
        future = self._executor.submit(func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: concurrent.futures.Future[object]) -> object:
        return future.result()

    def terminate(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        if ensure_ready and self.parallel is not None:
            self.configure(n_jobs=getattr(self.parallel, "n_jobs", 1), parallel=self.parallel)


joblib.register_parallel_backend(NAME, OomguardBackend)

__all__ = ["NAME", "OomguardBackend", "limit_threads"]
