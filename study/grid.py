"""Expand a study spec into its cells, in dependency order, with their counts."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field

from pipeline.cell import Cell, dependencies
from study.spec import STAGE_RANK, StudySpec


@dataclass(frozen=True)
class Grid:
    cells: tuple[Cell, ...]  # in STAGES order; dependencies first
    # cells whose task sets are chosen from results not stored yet, per (stage, method)
    pending: Counter = field(default_factory=Counter)

    def counts(self) -> Counter:
        """Cells per (stage, method)."""
        return Counter((c.stage, c.method) for c in self.cells)

    def stages(self) -> list[list[Cell]]:
        """The cells in waves that each run in parallel: a cell's dependencies are in earlier waves
        (zero-shot, single and joint cells need nothing; an init cell needs its source's singles).
        Each wave is one scheduling round, so a study without init cells runs in one."""
        wave: dict[Cell, int] = {}
        for cell in self.cells:  # dependencies come first in the grid's order
            wave[cell] = 1 + max((wave[d] for d in dependencies(cell)), default=-1)
        groups: dict[int, list[Cell]] = {}
        for cell in self.cells:
            groups.setdefault(wave[cell], []).append(cell)
        return [groups[k] for k in sorted(groups)]


def noise_pairs(spec: StudySpec) -> set[tuple[str, str]]:
    """The (source, target) pairs that also run at the noise seeds, drawn once for every method with
    the spec's `noise.draw`: `noise.pairs` off-diagonal pairs, and every source (the self control
    included) of `noise.targets` targets."""
    pairs = [(s, t) for s in spec.tasks for t in spec.tasks if s != t]
    drawn = set(random.Random(spec.noise.draw).sample(pairs, spec.noise.pairs))
    targets = random.Random(f"targets|{spec.noise.draw}").sample(list(spec.tasks), spec.noise.targets)
    return drawn | {(s, t) for t in targets for s in spec.tasks}


def expand(spec: StudySpec, evidence=None) -> Grid:
    """All cells of the study. An init transfer pulls in its source's single cells even when the
    spec's stages leave 'single' out; the diagonal (source = target) is part of the grid. At the
    noise seeds, every single cell and the transfer cells of the noise pairs run again. Multisource
    and groups cells (at the study's seeds) are those whose sets `evidence` (study.choose) can
    choose; the others are counted as pending."""
    cells: dict[Cell, None] = {}
    pending: Counter = Counter()
    if "zeroshot" in spec.stages:
        for task in spec.tasks:
            cells[Cell(method="zeroshot", target=task, stage="zeroshot", backbone=spec.backbone)] = None
    extra = noise_pairs(spec) if spec.noise.seeds else set()
    for method, config in spec.methods:
        for shots in spec.shots:
            for seed in (*spec.seeds, *spec.noise.seeds):
                pairs = None if seed in spec.seeds else extra  # None: every pair
                common = dict(
                    method=method,
                    backbone=spec.backbone,
                    shots=shots,
                    seed=seed,
                    recipe=spec.recipe_for(method),
                    method_config=config,
                )
                if "single" in spec.stages:
                    for task in spec.tasks:
                        cells[Cell(target=task, **common)] = None
                if seed in spec.seeds:
                    _chosen_cells(spec, evidence, common, cells, pending)
                if "transfer" not in spec.stages:
                    continue
                for mode in spec.modes:
                    options = (
                        dict(label_space=spec.label_space, joint_sampling=spec.joint_sampling)
                        if mode == "joint"
                        else dict(source_seeds=spec.source_seeds)
                    )
                    for source in spec.tasks:
                        for target in spec.tasks:
                            if pairs is not None and (source, target) not in pairs:
                                continue
                            cell = Cell(
                                target=target,
                                stage="transfer",
                                mode=mode,
                                source=source,
                                **options,
                                **common,
                            )
                            for dep in dependencies(cell):
                                cells.setdefault(dep, None)
                            cells[cell] = None
    ordered = sorted(cells, key=lambda c: STAGE_RANK[c.stage])  # stable: spec order within a stage
    return Grid(tuple(ordered), pending)


def max_group_size(n_tasks: int) -> int:
    """No group above half the tasks (a group of one task when there are fewer than four)."""
    return max(1, n_tasks // 2)


def _add(cells: dict, cell: Cell) -> None:
    for dep in dependencies(cell):
        cells.setdefault(dep, None)
    cells[cell] = None


def _chosen_cells(spec: StudySpec, evidence, common: dict, cells: dict, pending: Counter) -> None:
    """The multisource and groups cells of one (method, shots, seed) whose sets can be chosen."""
    from study.choose import Evidence, fold_of, random_groups, random_k

    evidence = evidence or Evidence()
    key = (common["method"], common["shots"], common["seed"])
    if "multisource" in spec.stages:
        k = spec.multisource.k
        for target in spec.tasks:
            for policy in spec.multisource.policies:
                if policy == "all":
                    chosen = tuple(t for t in spec.tasks if t != target)
                elif policy == "all_but_fold":
                    fold = fold_of(spec.tasks, spec.multisource.folds, common["seed"], target)
                    chosen = tuple(t for t in spec.tasks if t not in fold)
                elif policy == "random_k":
                    chosen = random_k(spec.tasks, k, common["seed"], target)
                else:
                    chosen = evidence.top_k(policy.removeprefix("top_k:"), key, target, k)
                if chosen is None:
                    pending[("multisource", common["method"])] += 1
                    continue
                budget = spec.multisource.budget
                cell = Cell(
                    stage="multisource", target=target, tasks=chosen, policy=policy, budget=budget, **common
                )
                _add(cells, cell)
    if "groups" not in spec.stages:
        return
    for by in spec.groups.by:
        found = evidence.groups(by, key, spec.groups.n_groups, max_group_size(len(spec.tasks)))
        if found is None:
            pending[("groups", common["method"])] += 2 * len(spec.tasks)  # and its random groups
            continue
        randomly = random_groups(spec.tasks, [len(g) for g in found], common["seed"], by)
        for policy, groups in ((by, found), (f"random:{by}", randomly)):
            for group in groups:
                for target in group:
                    budget = spec.groups.budget
                    _add(
                        cells,
                        Cell(
                            stage="groups", target=target, tasks=group, policy=policy, budget=budget, **common
                        ),
                    )
