"""Cells over sets of tasks: multitask prompts, multi-source starts and groups."""

from __future__ import annotations

import dataclasses

import pytest

from pipeline.cell import Cell, cell_id, dependencies, multitask_cell, set_name
from pipeline.errors import MvlptError
from pipeline.loop import epoch_batches, set_batches
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


def test_a_set_runs_the_steps_of_one_task_each_from_one_task_and_with_one_task_the_single_cells():
    recipe = Recipe(epochs=2, batch_size=4, min_steps=6)
    single = epoch_batches(10, 0, recipe, seed=3, sampling="paired")
    alone = set_batches([10], recipe, seed=3)
    assert [[b.tolist() for b in e] for e in alone] == [[b.tolist() for b in e] for e in single]
    three = set_batches([8, 10, 12], recipe, seed=3)
    assert [len(e) for e in three] == [len(e) for e in single]  # the steps of a task of mean size
    owners = [{0 if i < 8 else 1 if i < 18 else 2 for i in b.tolist()} for e in three for b in e]
    assert all(len(o) == 1 for o in owners)  # every batch from one task
    turns = [o.pop() for o in owners]
    assert sorted(turns[:3]) == [0, 1, 2] and sorted(turns[3:6]) == [0, 1, 2]  # each task once a round


def test_under_per_task_each_task_of_a_set_gets_its_single_cells_batches():
    recipe = Recipe(epochs=2, batch_size=4, min_steps=6)
    sizes = [8, 10, 12, 3]
    plan = set_batches(sizes, recipe, seed=3, budget="per_task")
    steps = [b for e in plan for b in e]
    offsets = [0, 8, 18, 30]
    owner = [max(k for k in range(4) if b[0] >= offsets[k]) for b in steps]
    for k, size in enumerate(sizes):
        alone = [b for e in epoch_batches(size, 0, recipe, seed=0, sampling="paired") for b in e]
        mine = [b for b, o in zip(steps, owner, strict=True) if o == k]
        assert len(mine) == len(alone), k  # its single cell's number of batches
        assert sorted(sum((b.tolist() for b in mine), [])) == sorted(
            sum(((b + offsets[k]).tolist() for b in alone), [])
        )  # and the same images as often
        assert all(set(b.tolist()) <= set(range(offsets[k], offsets[k] + size)) for b in mine)
    # every task spread over the whole run, not one task after another
    assert all(k in owner[: len(owner) // 2] and k in owner[len(owner) // 2 :] for k in range(4))
    assert len(plan) == len(set_batches(sizes, recipe, seed=3))  # epochs of a task of mean size
    one = set_batches([10], recipe, seed=3, budget="per_task")
    assert [[b.tolist() for b in e] for e in one] == [
        [b.tolist() for b in e] for e in epoch_batches(10, 0, recipe, seed=3, sampling="paired")
    ]


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


def test_the_cell_command_runs_multisource_and_groups_cells(toy_tasks, capsys):
    import json

    from study.cli import main

    common = [
        "--method",
        "coop",
        "--backbone",
        "tiny",
        "--shots",
        "2",
        "--epochs",
        "3",
        "--lr",
        "0.05",
        "--json",
    ]
    assert main(["cell", "--target", "toy-three", "--sources", "toy-multi,toy-five", *common]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["stage"], row["source"], row["policy"]) == ("multisource", "toy-five+toy-multi", "given")
    assert row["value"] == run(_cell("multisource", "toy-three", ["toy-five", "toy-multi"], "given")).value
    assert main(["cell", "--target", "toy-three", "--group", "toy-three", "--policy", "mine", *common]) == 0
    row = json.loads(capsys.readouterr().out)
    assert (row["stage"], row["policy"]) == ("groups", "mine")
    assert row["value"] == run(Cell(method="coop", target="toy-three", **COMMON)).value
    assert (
        main(["cell", "--target", "toy-three", "--sources", "toy-five", "--group", "toy-three", *common]) == 2
    )
    assert "exclude each other" in capsys.readouterr().err
    assert main(["cell", "--target", "toy-three", "--sources", "toy-three,toy-five", *common]) == 2
    assert "leave its target 'toy-three' out" in capsys.readouterr().err
