"""planners._borrowed: owner-less views read and write the same memory and never change who frees it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from numba import njit
from numba.core.runtime import _nrt_python  # type: ignore[attr-defined]

from planners._borrowed import borrowed

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def nrt_stats() -> Iterator[Any]:
    """Numba's allocation counters (off by default), on for the test."""
    _nrt_python.memsys_enable_stats()
    try:
        yield lambda: (_nrt_python.memsys_get_stats_alloc(), _nrt_python.memsys_get_stats_free())
    finally:
        _nrt_python.memsys_disable_stats()


@njit(cache=False)
def _helper(view: Any, scale: float) -> float:
    total = 0.0
    for x in range(view.shape[0]):
        if view[x] < 0:  # an early return: the case numba's pruning cannot pair
            return total
        total += scale * view[x]
    return total


@njit(cache=False)
def _sums(table: Any, rounds: int) -> tuple[Any, float]:
    """Sums through borrowed views of a tuple holding an array, a tuple of arrays and a scalar; returns the array
    inside the nested tuple, which the views must not have released."""
    view = borrowed(table)
    total = 0.0
    for _ in range(rounds):
        total += _helper(view[0], view[2]) + view[1][0][3]
    return table[1][0], total


@njit(cache=False)
def _make_and_sum(rounds: int) -> tuple[Any, float]:
    a = np.arange(10.0)
    nested = np.arange(5.0)
    return _sums((a, (nested,), 2.0), rounds)


@njit(cache=False)
def _write_through(a: Any) -> None:
    view = borrowed(a)
    view[0] = 42


def test_views_read_and_write_the_same_memory() -> None:
    a = np.arange(6, dtype=np.int64)
    _write_through(a)
    assert a[0] == 42
    table = (np.arange(4.0), (np.arange(5.0),), 0.5)
    nested, total = _sums(table, 3)
    assert total == pytest.approx(3 * (0.5 * 6.0 + 3.0))
    assert np.array_equal(nested, table[1][0])


def test_views_neither_free_nor_leak(nrt_stats: Any) -> None:
    """The two arrays a kernel allocates are freed once each, and only when their owners go: a borrowed view that
    released its array early would free one before the kernel returns it, one that kept it would leak."""
    _make_and_sum(1)  # compile outside the counted window
    alloc0, free0 = nrt_stats()
    nested, total = _make_and_sum(1000)
    alloc1, free1 = nrt_stats()
    assert total == pytest.approx(1000 * (2.0 * 45.0 + 3.0))
    assert (alloc1 - alloc0, free1 - free0) == (2, 1)  # the outer array freed; the returned one alive
    assert nested.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    del nested
    assert nrt_stats()[1] - free0 == 2


def test_only_arrays_and_tuples_of_them_are_borrowed() -> None:
    @njit(cache=False)
    def borrow_scalar(x: float) -> Any:
        return borrowed(x)

    with pytest.raises(Exception, match="borrowed"):
        borrow_scalar(1.0)
