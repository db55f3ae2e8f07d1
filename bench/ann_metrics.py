"""Measurement helpers shared by bench/ann.py and bench/ann_others.py.

Needs only numpy and psutil (no Keel), so ann_others.py can use it from its own virtualenv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

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


@dataclass
class Row:
    """One line of the comparison table."""

    name: str
    build_s: float
    recall: float
    qps: float
    memory_mb: float

    @staticmethod
    def header() -> str:
        return f"{'index':<38} {'build s':>8} {'recall':>9} {'QPS':>9} {'MB':>9}"

    def line(self) -> str:
        return (
            f"{self.name:<38} {self.build_s:8.1f} {self.recall:9.3f} {self.qps:9.0f} "
            f"{self.memory_mb:9.1f}"
        )
