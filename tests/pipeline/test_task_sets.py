"""Cells over sets of tasks: multitask prompts, multi-source starts and groups."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.cell import Cell, cell_id, dependencies, multitask_cell, set_name
from pipeline.errors import MvlptError
from pipeline.loop import epoch_batches
from pipeline.recipe import Recipe
from pipeline.run import run

RECIPE = Recipe(epochs=3, lr=0.05, warmup_epochs=1)
COMMON = dict(backbone="tiny", shots=2, seed=0, recipe=RECIPE)


def _cell(stage: str, target: str, tasks, policy=None, method="coop") -> Cell:
    return Cell(method=method, target=target, stage=stage, tasks=tuple(tasks), policy=policy, **COMMON)


def test_a_set_cell_is_checked_in_one_line(toy_tasks):
    with pytest.raises(MvlptError, match="leave its target 'toy-three' out"):
        _cell("multisource", "toy-three", ["toy-five", "toy-three"], "all")
    with pytest.raises(MvlptError, match="must be a member of its group"):
        _cell("groups", "toy-three", ["toy-five"], "gain")
    with pytest.raises(MvlptError, match="needs the policy"):
        _cell("multisource", "toy-three", ["toy-five"])
    with pytest.raises(MvlptError, match="named by its tasks"):
        _cell("multitask", "toy-five", ["toy-five", "toy-three"])
    with pytest.raises(MvlptError, match="takes no task set"):
        Cell(method="coop", target="toy-three", tasks=("toy-five",), **COMMON)


def test_a_set_cell_depends_on_the_multitask_cell_of_its_set_whatever_the_order(toy_tasks):
    one = _cell("multisource", "toy-multi", ["toy-three", "toy-five"], "all")
    two = _cell("multisource", "toy-multi", ["toy-five", "toy-three"], "random_k")
    [dep] = dependencies(one)
    assert dep == dependencies(two)[0] == multitask_cell(one, ["toy-five", "toy-three"])
    assert dep.target == set_name(["toy-three", "toy-five"]) == "toy-five+toy-three"
    assert cell_id(one) != cell_id(two)  # the policy labels the row: two rows, one source prompt
    assert cell_id(dataclasses.replace(dep, seed=1)) != cell_id(dep)


def test_a_set_epoch_is_one_task_epoch_and_with_one_task_the_single_cells():
    recipe = Recipe(epochs=2, batch_size=4, min_steps=6)
    single = epoch_batches(10, 0, recipe, seed=3, sampling="paired")
    alone = epoch_batches(10, 0, recipe, seed=3, sampling="set", n_tasks=1)
    assert [[b.tolist() for b in e] for e in alone] == [[b.tolist() for b in e] for e in single]
    three = epoch_batches(30, 0, recipe, seed=3, sampling="set", n_tasks=3)
    assert sum(len(e) for e in three) == sum(len(e) for e in single)  # as many steps as one task's cell
    drawn = [i for e in three for b in e for i in b.tolist()]
    assert len(drawn) == 20 and len(set(drawn)) == 20  # a walk through one permutation of all 30


@pytest.mark.parametrize("method", ["coop", "vpt"])
def test_a_group_of_one_task_equals_its_single_cell(toy_tasks, method):
    single = run(Cell(method=method, target="toy-three", **COMMON))
    group = run(_cell("groups", "toy-three", ["toy-three"], "gain", method=method))
    assert group.value == single.value and group.n_test == single.n_test
    assert group.source == "toy-three" and group.policy == "gain"


def test_multitask_then_multisource_then_groups(toy_tasks):
    sources = ["toy-five", "toy-multi"]
    multitask = run(multitask_cell(_cell("groups", "toy-five", sources, "x"), sources))
    assert multitask.stage == "multitask" and multitask.metric == "mean_validation"
    assert multitask.value == multitask.val_value and 0 <= multitask.value <= 1 and multitask.n_test == 0
    start = run(_cell("multisource", "toy-three", sources, "all"), source_state=multitask.prompt_state)
    assert start.source == "toy-five+toy-multi" and start.policy == "all" and start.n_test == 18
    member = run(_cell("groups", "toy-multi", sources, "gain"), source_state=multitask.prompt_state)
    assert member.metric == "map11" and member.epochs_run == 0
    again = run(_cell("groups", "toy-multi", sources, "gain"))  # runs its multitask cell itself
    assert again.value == member.value
