"""run(cell): determinism, identity, and the three stages."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from pipeline.errors import MvlptError
from pipeline.loop import Recipe
from pipeline.run import Cell, cell_id, dependencies, make_cell, run

RECIPE = Recipe(epochs=3, lr=0.05, warmup_epochs=1)


@pytest.mark.parametrize("method", ["coop", "upt"])
def test_same_cell_same_number_in_process_and_in_a_new_process(method, image_folder):
    cell = make_cell(method, str(image_folder), shots=2, seed=0, recipe=RECIPE)
    first, second = run(cell), run(cell)
    assert first.value == second.value and first.val_value == second.val_value
    assert first.cell_id == second.cell_id
    for key, tensor in first.prompt_state["tensors"].items():
        assert (tensor == second.prompt_state["tensors"][key]).all()
    cmd = [
        sys.executable,
        "-m",
        "study.cli",
        "cell",
        "--method",
        method,
        "--target",
        str(image_folder),
        "--shots",
        "2",
        "--seed",
        "0",
        "--epochs",
        "3",
        "--lr",
        "0.05",
        "--json",
    ]
    out = subprocess.run(cmd + ["--backbone", "tiny"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)
    assert row["cell_id"] == first.cell_id
    assert row["value"] == first.value  # to the last digit


def test_identity_tracks_every_input(toy_tasks):
    base = make_cell("coop", "toy-three", shots=2, seed=0, recipe=RECIPE)
    ids = {cell_id(base)}
    for change in (
        dict(seed=1),
        dict(shots=3),
        dict(recipe=Recipe(epochs=4)),
        dict(method_config=(("n_ctx", 4),)),
        dict(stage="transfer", mode="joint", source="toy-five"),
        dict(stage="transfer", mode="init", source="toy-five"),
        dict(metric="mean_per_class"),
    ):
        ids.add(cell_id(dataclasses.replace(base, **change)))
    assert len(ids) == 8
    assert cell_id(base) == cell_id(make_cell("coop", "toy-three", shots=2, seed=0, recipe=RECIPE))
    # defaults are part of the identity: spelling one out does not change it
    assert cell_id(base) == cell_id(dataclasses.replace(base, method_config=(("position", "middle"),)))
    seed0 = dataclasses.replace(base, stage="transfer", mode="init", source="toy-five")
    averaged = dataclasses.replace(seed0, source_seeds=(0, 1, 2))
    assert [d.seed for d in dependencies(averaged)] == [0, 1, 2]
    assert cell_id(averaged) != cell_id(seed0)


def test_seed_zero_is_a_seed(toy_tasks):
    a = run(make_cell("vpt", "toy-three", shots=2, seed=0, recipe=RECIPE))
    b = run(make_cell("vpt", "toy-three", shots=2, seed=1, recipe=RECIPE))
    assert a.cell_id != b.cell_id
    assert any(
        not (a.prompt_state["tensors"][k] == b.prompt_state["tensors"][k]).all()
        for k in a.prompt_state["tensors"]
    )


def test_zero_shot_single_and_both_transfer_modes(toy_tasks, tmp_path):
    zs = run(make_cell("zeroshot", "toy-three"))
    assert zs.stage == "zeroshot" and zs.n_train == 0 and zs.n_test == 18 and zs.epochs_run == 0
    single = run(make_cell("coop", "toy-three", shots=2, recipe=RECIPE))
    assert single.n_train == 6 and single.epochs_run == 3
    joint = run(make_cell("coop", "toy-three", source="toy-five", mode="joint", shots=2, recipe=RECIPE))
    assert joint.n_train == 6 + 10 and joint.n_test == 18  # trained on both, evaluated on the target
    init_auto = run(make_cell("coop", "toy-three", source="toy-five", mode="init", shots=2, recipe=RECIPE))
    source = run(make_cell("coop", "toy-five", shots=2, recipe=RECIPE))
    from pipeline.methods import save_state

    save_state(source.prompt_state, tmp_path / "src.pt")
    init_file = run(
        make_cell("coop", "toy-three", source="toy-five", mode="init", shots=2, recipe=RECIPE),
        source_state=str(tmp_path / "src.pt"),
    )
    assert init_auto.value == init_file.value and init_auto.cell_id == init_file.cell_id
    row = single.row()
    for column in (
        "cell_id",
        "stage",
        "mode",
        "method",
        "backbone",
        "source",
        "target",
        "shots",
        "seed",
        "metric",
        "value",
        "n_train",
        "n_test",
        "epochs_run",
        "best_epoch",
        "wall_s",
        "peak_mem_mb",
        "device",
        "node",
        "status",
        "error",
        "code_version",
        "created_at",
        "method_config",
    ):
        assert column in row
    assert json.loads(row["method_config"])["position"] == "middle"


def test_joint_with_a_multilabel_target(toy_tasks):
    res = run(make_cell("vpt", "toy-multi", source="toy-five", mode="joint", shots=2, recipe=RECIPE))
    assert res.metric == "map11" and 0 <= res.value <= 1


def test_bad_cells_are_named():
    with pytest.raises(MvlptError, match="a transfer cell needs a source task"):
        Cell(method="coop", target="x", stage="transfer", mode="init")
    with pytest.raises(MvlptError, match="needs --mode init or joint"):
        Cell(method="coop", target="x", stage="transfer", source="y")
    with pytest.raises(MvlptError, match="unknown stage 'pretrain'"):
        Cell(method="coop", target="x", stage="pretrain")
    with pytest.raises(MvlptError, match="unknown metric 'f1'"):
        Cell(method="coop", target="x", metric="f1")


def test_joint_diagonal_equals_the_single_run(toy_tasks):
    single = run(make_cell("coop", "toy-three", shots=2, seed=0, recipe=RECIPE))
    diagonal = run(
        make_cell("coop", "toy-three", source="toy-three", mode="joint", shots=2, seed=0, recipe=RECIPE)
    )
    assert diagonal.value == single.value and diagonal.n_train == single.n_train
    assert diagonal.cell_id != single.cell_id  # still its own cell of the grid


def test_cells_without_the_later_options_keep_the_ids_they_had_before_them(toy_tasks):
    # ids computed before VPT and UPT had `gated` (and UPT `init`): a study begun then must find
    # its cells done, not run them again
    recipe = Recipe(epochs=2, lr=0.05, warmup_epochs=0)
    pinned = {("vpt", (("n_tokens", 4),)): "4a3538574091e2ca3973", ("upt", ()): "8bde5dfc909e3571569e"}
    for (method, config), expected in pinned.items():
        cell = make_cell(
            method,
            "toy-three",
            source="toy-five",
            mode="joint",
            shots=2,
            seed=0,
            recipe=recipe,
            method_config=dict(config),
        )
        assert cell_id(cell) == expected
        spelled = dataclasses.replace(cell, method_config=(*config, ("gated", False)))
        assert cell_id(spelled) == expected
        assert cell_id(dataclasses.replace(cell, method_config=(*config, ("gated", True)))) != expected
        # the same for the recipe's later field min_steps
        assert cell_id(dataclasses.replace(cell, recipe=dataclasses.replace(recipe, min_steps=0))) == expected
        assert cell_id(dataclasses.replace(cell, recipe=dataclasses.replace(recipe, min_steps=5))) != expected
