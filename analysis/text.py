"""Numbers as report text: estimates with intervals, p-values, signed claims, file-name slugs, and text
made safe for a terminal."""

from __future__ import annotations

import re

import numpy as np


def finite(x) -> bool:
    try:
        return x is not None and bool(np.isfinite(float(x)))
    except (TypeError, ValueError):
        return False


def num(x, digits: int = 1, missing: str = "–") -> str:
    return f"{float(x):.{digits}f}" if finite(x) else missing


def interval(est, lo, hi, digits: int = 2) -> str:
    """ "est [lo, hi]", or "n/a" without an estimate."""
    if not finite(est):
        return "n/a"
    ci = f" [{lo:.{digits}f}, {hi:.{digits}f}]" if finite(lo) and finite(hi) else " [interval n/a]"
    return f"{est:.{digits}f}{ci}"


def pvalue(x) -> str:
    if not finite(x):
        return "n/a"
    return f"{x:.3f}" if x >= 0.001 else "<0.001"


def claim(est, lo, hi, digits: int = 1, unit: str = "pts") -> str:
    """A signed estimate in `unit` with its interval, saying so when the interval includes 0."""
    if not finite(est):
        return "n/a"
    value = f"{est:+.{digits}f} {unit}".rstrip()
    if not (finite(lo) and finite(hi)):
        return f"{value} [interval n/a]"
    text = f"{value} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    return text + (" (interval includes 0: no claim)" if lo <= 0 <= hi else "")


def slug(*parts) -> str:
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 (but tab and newline), DEL and C1


def terminal_text(text: str) -> str:
    """`text` without control characters (a study or task name holding escape codes must not drive
    the terminal); newlines stay."""
    return _CONTROL.sub("", str(text))
