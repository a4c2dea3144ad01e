"""Large counts as people read them: 1234567 -> '1.23 M' (P, T, G, M, k)."""

from __future__ import annotations


def si(value: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:g}"
