"""A launch's plan: the cells of each stage in run order, their ids, their dependencies' ids, and
which are already done. Built once by the launcher from the grid and the store; the scheduler
runs it and computes no identity of its own."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from pipeline.cell import Cell, cell_id, dependencies
from study.grid import Grid


@dataclass(frozen=True)
class Plan:
    stages: tuple[tuple[Cell, ...], ...]  # the grid's waves in run order; a cell starts once its deps are
    # done, not when its wave does
    ids: dict[Cell, str]  # every cell of the stages, and every dependency, -> its cell id
    done: frozenset[str]  # ids stored with status ok before this launch
    # cells whose task sets wait for results not stored yet, per (stage, method): a later round
    pending: Counter = field(default_factory=Counter)

    @property
    def cells(self) -> list[Cell]:
        return [c for stage in self.stages for c in stage]

    def deps(self, cell: Cell) -> tuple[str, ...]:
        """The ids of the cells whose prompts this cell starts from (init mode: the source's)."""
        return tuple(self.ids[d] for d in dependencies(cell))

    @property
    def finished(self) -> bool:
        return not self.pending and all(self.ids[c] in self.done for c in self.cells)

    def todo(self, skip: frozenset[str] = frozenset()) -> list[Cell]:
        """The cells not done yet (nor in `skip`), in run order."""
        return [c for c in self.cells if self.ids[c] not in self.done and self.ids[c] not in skip]

    def counts(self, status: dict[str, str]) -> Counter:
        """Status ('ok', 'failed', 'missing', 'pending') of every cell of the study, given the
        store's statuses; pending ones wait for the results that choose their task sets."""
        out = Counter(status.get(self.ids[c], "missing") for c in self.cells)
        if self.pending:
            out["pending"] += sum(self.pending.values())
        return out

    def grid_counts(self) -> Counter:
        """Cells per (stage, method), pending ones included."""
        return Counter((c.stage, c.method) for c in self.cells) + self.pending

    def done_per(self) -> Counter:
        """Cells already done per (stage, method)."""
        return Counter((c.stage, c.method) for c in self.cells if self.ids[c] in self.done)


def build_plan(grid: Grid, done: set[str]) -> Plan:
    """Identify every cell of the grid once (a dependency's id is computed with its dependent)."""
    ids: dict[Cell, str] = {}
    for cell in grid.cells:
        for dep in dependencies(cell):
            if dep not in ids:
                ids[dep] = cell_id(dep)
        if cell not in ids:
            ids[cell] = cell_id(cell)
    stages = tuple(tuple(stage) for stage in grid.stages())
    done_ids = frozenset(i for i in ids.values() if i in done)
    return Plan(stages=stages, ids=ids, done=done_ids, pending=Counter(grid.pending))
