"""What every benchmark shares: a wall-clock timer, `name: value` output, the machine's description."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from raydistill.device import machine  # noqa: F401  (re-exported: every benchmark prints it first)

T = TypeVar("T")


def timed(fn: Callable[[], T], repeat: int = 1) -> tuple[float, T]:
    """Best wall time of `repeat` calls of fn, and the last call's result."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def compare(variants: dict[str, Callable[..., T]], rounds: int,
            setup: Callable[[], object] | None = None) -> dict[str, tuple[float, T]]:
    """Each variant's best wall time and last result over `rounds`, the variants interleaved so
    that load from other processes hits them alike. With `setup`, every call gets a fresh
    `setup()` (untimed) as its argument."""
    best: dict[str, tuple[float, T]] = {}
    for _ in range(rounds):
        for name, fn in variants.items():
            args = () if setup is None else (setup(),)
            seconds, out = timed(lambda: fn(*args))
            best[name] = (min(seconds, best[name][0]) if name in best else seconds, out)
    return best


def emit(name: str, value: object) -> None:
    """One result line, `name: value`; floats get four significant digits."""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    print(f"{name}: {text}", flush=True)


