"""A launch's plan: the cells of each stage in run order, their ids, their dependencies' ids, and
which are already done. Built once by the launcher from the grid and the store; the scheduler
runs it and computes no identity of its own."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pipeline.cell import Cell, cell_id, dependencies
from study.grid import Grid


@dataclass(frozen=True)
class Plan:
    stages: tuple[tuple[Cell, ...], ...]  # the grid's waves in run order; a cell starts once its deps are
    # done, not when its wave does
    ids: dict[Cell, str]  # every cell of the stages, and every dependency, -> its cell id
    done: frozenset[str]  # ids stored with status ok before this launch

    @property
    def cells(self) -> list[Cell]:
        return [c for stage in self.stages for c in stage]

    def deps(self, cell: Cell) -> tuple[str, ...]:
        """The ids of the cells whose prompts this cell starts from (init mode: the source's)."""
        return tuple(self.ids[d] for d in dependencies(cell))

    @property
    def finished(self) -> bool:
        return all(self.ids[c] in self.done for c in self.cells)

    def todo(self) -> list[Cell]:
        """The cells not done yet, in run order."""
        return [c for c in self.cells if self.ids[c] not in self.done]

    def counts(self, status: dict[str, str]) -> Counter:
        """Status ('ok', 'failed', 'missing') of every planned cell, given the store's statuses."""
        return Counter(status.get(self.ids[c], "missing") for c in self.cells)

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
    return Plan(stages=stages, ids=ids, done=frozenset(i for i in ids.values() if i in done))
