"""The protocol's spec fields: per-method recipes, noise over whole target columns, the per-task
budget and the fold policy of multi-source starts, bounded groups, and status's kept-start count."""

from __future__ import annotations

import pytest

from pipeline.cell import cell_id, dependencies
from pipeline.errors import MvlptError
from study.grid import expand, max_group_size
from study.spec import spec_from_dict

TASKS = [f"t{i}" for i in range(8)]
BASE = {
    "name": "protocol",
    "backbone": "tiny",
    "tasks": ["toy-five", "toy-three", "toy-multi"],
    "methods": {"coop": {}, "vpt": {}},
    "shots": [2],
    "recipe": {"epochs": 2, "lr": 0.05, "vpt": {"lr": 0.5, "selection": "last"}},
}


def test_a_method_recipe_overrides_the_shared_one_for_its_cells_only(toy_tasks):
    spec = spec_from_dict(BASE)
    recipes = {c.method: c.recipe for c in expand(spec).cells if c.stage != "zeroshot"}
    assert (recipes["coop"].lr, recipes["coop"].selection, recipes["coop"].epochs) == (0.05, "val_metric", 2)
    assert (recipes["vpt"].lr, recipes["vpt"].selection, recipes["vpt"].epochs) == (0.5, "last", 2)
    assert spec_from_dict(spec.to_dict()) == spec  # the document loads back to itself
    with pytest.raises(MvlptError, match=r"\[recipe.upt\] names no method of the study"):
        spec_from_dict({**BASE, "recipe": {"upt": {"lr": 0.1}}})
    with pytest.raises(MvlptError, match="unknown key 'lrr' in \\[recipe.vpt\\]"):
        spec_from_dict({**BASE, "recipe": {"vpt": {"lrr": 0.1}}})
    with pytest.raises(MvlptError, match="unknown selection 'best'"):
        spec_from_dict({**BASE, "recipe": {"selection": "best"}})


def test_noise_targets_rerun_whole_columns_with_their_self_control(toy_tasks):
    spec = spec_from_dict({**BASE, "noise": {"seeds": [1], "targets": 2}})
    extra = [c for c in expand(spec).cells if c.stage == "transfer" and c.seed == 1]
    columns = {c.target for c in extra}
    assert len(columns) == 2
    for target in columns:  # every source, the target itself (the self control) included
        assert {c.source for c in extra if c.target == target and c.method == "coop"} == set(BASE["tasks"])
    with pytest.raises(MvlptError, match="'noise.targets' must be between 0 and 3"):
        spec_from_dict({**BASE, "noise": {"seeds": [1], "targets": 4}})


def _sets_spec(**multisource):
    return spec_from_dict(
        {
            "name": "sets",
            "backbone": "tiny",
            "tasks": TASKS,
            "methods": {"coop": {}},
            "stages": ["single", "transfer", "multisource"],
            "multisource": {"policies": ["all_but_fold", "random_k"], "k": 2, **multisource},
        }
    )


def test_fold_prompts_are_shared_by_a_folds_targets_and_never_hold_them():
    grid = expand(_sets_spec(folds=4))
    folds = [c for c in grid.cells if c.stage == "multisource" and c.policy == "all_but_fold"]
    assert len(folds) == 8 and all(c.target not in c.tasks and len(c.tasks) == 6 for c in folds)
    prompts = {dependencies(c)[0] for c in folds}
    assert len(prompts) == 4  # one multitask prompt per fold, each shared by the fold's two targets
    assert {c.budget for c in grid.cells if c.stage in ("multisource", "multitask")} == {"per_task"}
    equal = expand(_sets_spec(budget="equal"))
    assert {c.budget for c in equal.cells if c.stage in ("multisource", "multitask")} == {"equal"}
    with pytest.raises(MvlptError, match="'multisource.folds' must be between 2 and 8"):
        _sets_spec(folds=9)
    with pytest.raises(MvlptError, match="'multisource.budget' has unknown value 'half'"):
        _sets_spec(budget="half")


def test_a_budget_is_part_of_a_multitask_cells_identity_only(toy_tasks):
    from pipeline.cell import Cell

    common = dict(method="coop", backbone="tiny", shots=2, stage="multitask", tasks=("toy-five", "toy-three"))
    per_task = Cell(target="toy-five+toy-three", **common)
    equal = Cell(target="toy-five+toy-three", budget="equal", **common)
    assert per_task.budget == "per_task" and cell_id(per_task) != cell_id(equal)
    with pytest.raises(MvlptError, match="takes no task set, policy or budget"):
        Cell(method="coop", target="toy-five", budget="equal")


def test_no_group_above_half_the_tasks():
    assert [max_group_size(n) for n in (1, 2, 3, 4, 20)] == [1, 1, 1, 2, 10]


def test_status_counts_the_cells_that_kept_their_start(tmp_path, capsys):
    from study.cli import main
    from study.launch import write_meta
    from study.store import Store

    spec = spec_from_dict({**BASE, "methods": {"coop": {}}, "recipe": {"epochs": 2}})
    store = Store(tmp_path / "protocol")
    store.create()
    write_meta(spec, store, expand(spec).counts(), None)
    for i, moved in enumerate((True, False, None, False)):
        row = dict(study="protocol", cell_id=f"c{i}", stage="single", method="coop", target="toy-five")
        store.write_cell(row | dict(status="ok", value=0.5, moved=moved))
    assert main(["status", str(tmp_path / "protocol")]) == 0
    out = capsys.readouterr().out
    header, single = out.splitlines()[1], next(line for line in out.splitlines() if line.startswith("single"))
    assert header.split()[-2:] == ["kept", "start"] and single.split()[-1] == "2"


def test_the_protocol_bench_layers_a_candidate_over_the_specs_recipe():
    """bench/protocol.py: a field a candidate leaves alone is the spec's (shared, then per method),
    not the kernel's default; the candidate's shared fields, then its per-method ones, win."""
    from bench.protocol import method_recipe

    spec = spec_from_dict({**BASE, "recipe": {**BASE["recipe"], "selection": "last"}})
    assert method_recipe("coop", {}, spec) == spec.recipe_for("coop")
    plain = method_recipe("coop", {"min_steps": 9}, spec)
    assert (plain.selection, plain.lr, plain.epochs, plain.min_steps) == ("last", 0.05, 2, 9)
    vpt = method_recipe("vpt", {"lr": 0.2, "vpt": {"grad_clip": 1.5}, "coop": {"lr": 0.9}}, spec)
    assert (vpt.lr, vpt.grad_clip, vpt.selection) == (0.2, 1.5, "last")  # the candidate's lr over the spec's
    assert method_recipe("coop", {"coop": {"lr": 0.9}}, spec).lr == 0.9
