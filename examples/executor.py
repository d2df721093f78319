"""oomguard.Executor where a ProcessPoolExecutor was: one call of twenty needs more memory
than a worker may have; only its future fails, and says why.

    python examples/executor.py
"""

from __future__ import annotations

import oomguard


def allocate(mib: int) -> int:
    buf = bytearray(mib * 1024 * 1024)
    for i in range(0, len(buf), 4096):
        buf[i] = 1
    return mib


if __name__ == "__main__":
    with oomguard.Executor(max_workers=2, worker_memory="400MiB") as ex:
        futures = [ex.submit(allocate, 1024 if i == 5 else 8) for i in range(20)]
        for i, future in enumerate(futures):
            err = future.exception()
            if err is None:
                print(i, "allocated", future.result(), "MiB")
            else:
                print(i, type(err).__name__, err)
        print(list(ex.map(lambda x: x * x, range(10), chunksize=4)))
