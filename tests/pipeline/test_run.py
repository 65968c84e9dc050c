"""run(cell): determinism, identity, and the three stages."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from pipeline.cell import Cell, cell_id, dependencies, make_cell
from pipeline.errors import MvlptError
from pipeline.recipe import Recipe
from pipeline.run import LabelSpace, run

RECIPE = Recipe(epochs=3, lr=0.05, warmup_epochs=1)


def test_same_cell_same_number_in_process_and_in_a_new_process(image_folder):
    methods = ("coop", "upt")
    # one new process runs `mvlpt cell` for each method, while this one runs each cell twice
    args = ["--target", str(image_folder), "--shots", "2", "--seed", "0", "--epochs", "3", "--lr", "0.05"]
    script = (
        "import sys; from study.cli import main\n"
        f"for m in {methods!r}: main(['cell', '--method', m, *sys.argv[1:]])"
    )
    cmd = [sys.executable, "-c", script, *args, "--json", "--backbone", "tiny"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    firsts = []
    for method in methods:
        cell = make_cell(method, str(image_folder), shots=2, seed=0, recipe=RECIPE)
        first, second = run(cell), run(cell)
        assert first.value == second.value and first.val_value == second.val_value
        assert first.cell_id == second.cell_id
        for key, tensor in first.prompt_state["tensors"].items():
            assert (tensor == second.prompt_state["tensors"][key]).all()
        firsts.append(first)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["cell_id"] for r in rows] == [f.cell_id for f in firsts]
    assert [r["value"] for r in rows] == [f.value for f in firsts]  # to the last digit


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
    assert single.n_train == 3 and single.epochs_run == 3  # of 2 shots a class, 1 validates
    joint = run(make_cell("coop", "toy-three", source="toy-five", mode="joint", shots=2, recipe=RECIPE))
    assert joint.n_train == 3 + 5 and joint.n_test == 18  # trained on both, evaluated on the target
    assert (joint.label_space, joint.joint_sampling) == ("per_task", "paired")
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


def test_self_control_is_the_joint_cell_with_the_target_as_its_own_source(toy_tasks):
    """The diagonal joint cell counts each batch twice and sees nothing new: with SGD and momentum,
    a loss of 2L is the single cell's step at twice the lr (warm-up included) and half the weight
    decay, so the self control equals that single cell up to float rounding."""
    recipe = Recipe(epochs=3, lr=0.05, warmup_epochs=1, selection="last")
    doubled = dataclasses.replace(recipe, lr=0.1, warmup_lr=2 * recipe.warmup_lr, weight_decay=2.5e-4)
    control = run(make_cell("coop", "toy-three", source="toy-three", mode="joint", shots=2, recipe=recipe))
    bigger = run(make_cell("coop", "toy-three", shots=2, recipe=doubled))
    plain = run(make_cell("coop", "toy-three", shots=2, recipe=recipe))
    assert control.n_train == 2 * plain.n_train  # the target's images and their copies
    got, want = control.prompt_state["tensors"]["ctx"], bigger.prompt_state["tensors"]["ctx"]
    assert np.allclose(got.numpy(), want.numpy(), atol=1e-5)
    assert not np.allclose(got.numpy(), plain.prompt_state["tensors"]["ctx"].numpy(), atol=1e-5)
    assert control.moved and control.cell_id not in (plain.cell_id, bigger.cell_id)


def test_joint_options_are_part_of_a_joint_cells_identity_only(toy_tasks):
    joint = make_cell("coop", "toy-three", source="toy-five", mode="joint", shots=2, recipe=RECIPE)
    assert (joint.label_space, joint.joint_sampling) == ("per_task", "paired")  # the defaults
    ids = {cell_id(joint)}
    for change in (dict(label_space="union"), dict(joint_sampling="concat")):
        ids.add(cell_id(dataclasses.replace(joint, **change)))
    assert len(ids) == 3
    spelled = make_cell(
        "coop", "toy-three", source="toy-five", mode="joint", shots=2, recipe=RECIPE, label_space="per_task"
    )
    assert cell_id(spelled) == cell_id(joint)
    with pytest.raises(MvlptError, match="label_space applies to joint-mode transfer only"):
        make_cell("coop", "toy-three", shots=2, label_space="union")
    with pytest.raises(MvlptError, match="unknown joint_sampling 'zip'"):
        make_cell("coop", "toy-three", source="toy-five", mode="joint", joint_sampling="zip")


def test_cell_ids_are_pinned(toy_tasks):
    # an id names a result: a change of code that changes one must be deliberate (and refuse old
    # study folders), never a side effect of a refactor
    recipe = Recipe(epochs=2, lr=0.05, warmup_epochs=0)
    cells = {
        "single": make_cell("vpt", "toy-three", shots=2, recipe=recipe, method_config={"n_tokens": 4}),
        "init": make_cell("coop", "toy-three", source="toy-five", mode="init", shots=2, recipe=recipe),
        "joint": make_cell("upt", "toy-three", source="toy-five", mode="joint", shots=2, recipe=recipe),
        "zeroshot": make_cell("zeroshot", "toy-five"),
    }
    assert {k: cell_id(c) for k, c in cells.items()} == PINNED_IDS


PINNED_IDS = {
    "single": "96f6d5ad52ad6a243758",
    "init": "5af91d6f1f2168a100f8",
    "joint": "b790f22cf3cb54abd7f2",
    "zeroshot": "4006c0c9f294c3605f06",
}


def test_tasks_with_the_same_class_names_keep_distinct_slots(toy_tasks):
    from pipeline.data import resolve_task
    from tests.toy_data import colour_task

    twin = colour_task("toy-three-twin", ["apple", "boat", "cloud"], seed=5)  # toy-three's names
    space = LabelSpace.of([resolve_task("toy-three"), twin])
    assert space.classnames == ("apple", "boat", "cloud") * 2
    assert space.slots == (slice(0, 3), slice(3, 6))
    assert space.labels(1, np.array([0, 2])).tolist() == [3, 5]  # the twin's "apple" is slot 3, not 0
    joint = run(make_cell("coop", "toy-three", source="toy-three-twin", mode="joint", shots=2, recipe=RECIPE))
    assert joint.n_train == 3 + 3 and joint.status == "ok"
