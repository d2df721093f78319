"""The joblib backend "oomguard" with real workers: Parallel (lists and generators), the
workers' thread pools limited as loky limits them, and scikit-learn's GridSearchCV giving
loky's results."""

from __future__ import annotations

import os

import joblib
import pytest

import oomguard.joblib  # noqa: F401  (registers the backend)

pytestmark = [pytest.mark.timeout(300)]


def test_parallel_lists_and_generators() -> None:
    with joblib.parallel_config(backend="oomguard", n_jobs=2):
        assert joblib.Parallel()(joblib.delayed(pow)(i, 2) for i in range(20)) == [
            i * i for i in range(20)
        ]
        out = joblib.Parallel(return_as="generator")(joblib.delayed(abs)(-i) for i in range(10))
        assert list(out) == list(range(10))


def test_exceptions_reach_parallel_as_themselves() -> None:
    with pytest.raises(ZeroDivisionError):
        joblib.Parallel(backend="oomguard", n_jobs=2)(
            joblib.delayed(divmod)(1, i) for i in (1, 0, 2)
        )


def test_thread_pools_limited_in_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen = joblib.Parallel(backend="oomguard", n_jobs=2)(
        joblib.delayed(os.getenv)("OMP_NUM_THREADS") for _ in range(4)
    )
    assert seen == [str(max((os.cpu_count() or 1) // 2, 1))] * 4


def test_grid_search_equals_lokys() -> None:
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    x, y = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1.0, 10.0], "gamma": ["scale", 0.1]}

    def fit(backend: str) -> GridSearchCV:
        with joblib.parallel_config(backend=backend, n_jobs=2):
            return GridSearchCV(SVC(), grid, cv=3).fit(x, y)

    ours, lokys = fit("oomguard"), fit("loky")
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)  # loky's workers are not this test's to leave
    assert ours.best_params_ == lokys.best_params_
    assert list(ours.cv_results_["mean_test_score"]) == list(lokys.cv_results_["mean_test_score"])
    assert list(ours.predict(x)) == list(lokys.predict(x))
