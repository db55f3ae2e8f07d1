"""Measurement helpers shared by bench/ann.py and bench/ann_others.py.

Needs only numpy and psutil (no Keel), so ann_others.py can use it from its own virtualenv.
"""

from __future__ import annotations

import os

import numpy as np
import psutil

K = 10


def tie_aware_recall(
    found: list[list[int]], queries: np.ndarray, truth: np.ndarray, data: np.ndarray
) -> float:
    """Share of returned ids at least as similar as the exact K-th neighbour: man pages repeat
    text, so equal vectors under different ids are equally right answers."""
    total = 0
    for ids, q, exact in zip(found, queries, truth, strict=True):
        kth = float(data[exact[K - 1]] @ q)
        total += sum(1 for i in ids[:K] if i >= 0 and float(data[i] @ q) >= kth - 1e-5)
    return total / (K * len(queries))


def rss() -> int:
    """Resident memory of this process, in bytes."""
    return int(psutil.Process(os.getpid()).memory_info().rss)
