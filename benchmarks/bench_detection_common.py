"""What the detection benchmark's sections share: one BLAS thread per process, the import path,
a process pool, and the statistics of the tables (benchmarks/bench_detection.py runs them).

Import this module before numpy: it sets the BLAS thread count, which numpy reads on import.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# One BLAS thread per process: the worker processes already use every core, and the small
# matrix-vector products of the MMD detector only lose time to thread hand-offs.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from scipy.stats import chi2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


# --- statistics ------------------------------------------------------------------------------
def poisson_interval(k: int, level: float = 0.95) -> tuple[float, float]:
    low = 0.0 if k == 0 else chi2.ppf((1 - level) / 2, 2 * k) / 2
    high = chi2.ppf(1 - (1 - level) / 2, 2 * k + 2) / 2
    return float(low), float(high)


def nearest_rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]



def fmt_delay(value: float, horizon: int) -> str:
    return f">{horizon:,}" if math.isinf(value) else f"{value:,.0f}"



# --- orchestration ---------------------------------------------------------------------------
def chunks(items: Sequence[int], size: int) -> list[list[int]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]


class Runner:
    """Runs tasks in a process pool (inline when workers=1)."""

    def __init__(self, workers: int) -> None:
        self.pool: cf.Executor | None = None
        if workers > 1:
            methods = multiprocessing.get_all_start_methods()
            context = multiprocessing.get_context("fork" if "fork" in methods else None)
            self.pool = cf.ProcessPoolExecutor(max_workers=workers, mp_context=context)

    def submit(self, fn: Callable[..., Any], *args: Any) -> cf.Future[Any]:
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        future: cf.Future[Any] = cf.Future()
        future.set_result(fn(*args))
        return future

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

