"""Markdown tables whose numeric cells summarise seeds as mean ± std.

The std is the sample standard deviation over seeds (numpy's std with ddof=1): with 2-3 seeds it is the honest,
larger estimate of the spread. One seed prints the value alone; no seed prints "n/a".
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """(mean, sample std over the values; None for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    if array.size == 0:
        return math.nan, None
    return float(array.mean()), (float(array.std(ddof=1)) if array.size > 1 else None)


@dataclasses.dataclass(frozen=True)
class Stat:
    """A cell holding one value per seed."""

    values: tuple[float, ...]
    fmt: str = ".3f"

    def __str__(self) -> str:
        finite = [v for v in self.values if math.isfinite(v)]
        if not finite:
            return "not reached" if self.values else "n/a"
        mean, std = mean_std(finite)
        text = f"{mean:{self.fmt}}" if std is None else f"{mean:{self.fmt}} ± {std:{self.fmt}}"
        missing = len(self.values) - len(finite)
        return text + (f" ({missing} of {len(self.values)} not reached)" if missing else "")


def stat(values: Sequence[float], fmt: str = ".3f") -> Stat:
    return Stat(tuple(float(v) for v in values), fmt)


def fixed(value: float | None, fmt: str = ".3f") -> str:
    """A single number (one per run, not per seed)."""
    return "n/a" if value is None else f"{value:{fmt}}"


@dataclasses.dataclass
class Table:
    title: str
    columns: list[str]
    rows: list[list[object]]  # cells: Stat, str, or anything str() shows
    note: str = ""  # a paragraph under the table: how a column was computed

    def markdown(self) -> str:
        def cell(value) -> str:
            return str(value).replace("|", "\\|").replace("\n", " ")

        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


def parse_cell(text: str) -> tuple[float, float | None]:
    """(mean, std) back from a cell written by Stat ("4.123 ± 0.045", "4.123"); the tests read tables with it."""
    head = text.split("(")[0].strip().replace(",", "")
    mean, _, std = head.partition("±")
    return float(mean), (float(std) if std.strip() else None)
