"""The loop: metrics with known answers, the learning-rate schedule, best-validation selection."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import MvlptError
from pipeline.loop import (
    TrainSet,
    Validation,
    epoch_batches,
    epochs_for,
    joint_loss,
    loss_fn,
    lr_at,
    score,
    train,
)
from pipeline.methods import build_method
from pipeline.recipe import Recipe


def test_accuracy_and_mean_per_class():
    logits = np.array([[2, 0], [2, 0], [2, 0], [0, 2]], dtype=float)
    y = np.array([0, 0, 0, 1])
    assert score("accuracy", logits, np.array([0, 0, 1, 1])) == 0.75
    # 3 of class 0 right, 1 of class 1 right -> 1.0; with one class-1 miss -> (1 + 0.5) / 2
    assert score("mean_per_class", logits, y) == 1.0
    assert score("mean_per_class", logits, np.array([0, 0, 1, 1])) == 0.75


def test_eleven_point_map():
    # one class, ranking: pos, neg, pos -> precision 1 up to recall .5, then 2/3 up to recall 1
    scores = np.array([[0.9], [0.8], [0.7]])
    y = np.array([[1], [0], [1]])
    expected = (6 * 1.0 + 5 * (2 / 3)) / 11
    assert score("map11", scores, y) == pytest.approx(expected)
    perfect = np.array([[0.9, 0.1], [0.1, 0.9]])
    assert score("map11", perfect, np.array([[1, 0], [0, 1]])) == 1.0


def test_roc_auc_with_ties():
    logits = np.array([[0, 3], [0, 1], [0, 1], [0, -2]], dtype=float)  # scores 3, 1, 1, -2
    y = np.array([1, 1, 0, 0])
    # pairs (pos, neg): (3,1) win, (3,-2) win, (1,1) tie, (1,-2) win -> 3.5 / 4
    assert score("roc_auc", logits, y) == pytest.approx(0.875)
    with pytest.raises(MvlptError, match="unknown metric 'f1'"):
        score("f1", logits, y)


def test_warmup_then_cosine():
    r = Recipe(epochs=10, lr=0.002, warmup_epochs=1, warmup_lr=1e-5)
    assert lr_at(r, 0) == 1e-5
    assert lr_at(r, 5) == pytest.approx(0.001)
    assert lr_at(r, 9) == pytest.approx(0.5 * 0.002 * (1 + math.cos(math.pi * 0.9)))
    assert lr_at(Recipe(epochs=1), 0) == pytest.approx(0.002)  # no room for warm-up: train at lr


def test_min_steps_gives_a_small_training_set_more_epochs(tiny):
    r = Recipe(epochs=10, batch_size=32, min_steps=40)
    assert epochs_for(r, 24) == 40  # one step an epoch
    assert epochs_for(r, 96) == 14  # three steps an epoch: ceil(40 / 3)
    assert epochs_for(r, 640) == 10  # 20 steps an epoch: the recipe's epochs already pass 40 steps
    assert epochs_for(Recipe(epochs=0, min_steps=40), 24) == 0  # no tuning stays no tuning
    assert lr_at(r, 20, 40) == pytest.approx(0.5 * r.lr)  # the cosine spans the epochs that run
    method = build_method("coop", tiny, ["a", "b"], {"n_ctx": 2}, seed=0)
    x = tiny.encode_image(torch.rand(8, 3, 32, 32))
    y = torch.tensor([0, 1] * 4)
    data = TrainSet.single(x, y, 2)
    out = train(
        method,
        data,
        Validation(x, y.numpy(), slice(0, 2), "accuracy"),
        Recipe(epochs=2, batch_size=4, min_steps=10),
        seed=0,
    )
    # 5 short epochs stand for the recipe's 2: validation runs every 3 of them and after the last
    assert out.epochs_run == 5 and len(out.history) == 2
    with pytest.raises(MvlptError, match="min_steps"):
        Recipe(min_steps=-1)


def test_multilabel_loss_is_cross_entropy_on_the_positive_set():
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    soft = loss_fn(logits, torch.tensor([[1.0, 1.0, 0.0]]))
    logp = torch.log_softmax(logits, 1)[0]
    assert soft.item() == pytest.approx(-(logp[0] + logp[1]).item() / 2)


def test_best_validation_prompt_is_kept(tiny):
    method = build_method("coop", tiny, ["a", "b"], {"n_ctx": 2}, seed=0)
    x = tiny.encode_image(torch.rand(8, 3, 32, 32))
    y = torch.tensor([0, 1] * 4)
    data = TrainSet.single(x, y, 2)
    out = train(
        method,
        data,
        Validation(x, y.numpy(), slice(0, 2), "accuracy"),
        Recipe(epochs=6, lr=5.0, warmup_epochs=0),
        seed=0,
    )
    assert len(out.history) == 6 and out.epochs_run == 6
    best = max(out.history)
    assert out.val_value >= best
    if out.best_epoch >= 0:
        assert out.history[out.best_epoch] == out.val_value
    method.load_prompt_state(out.state)
    assert score("accuracy", method.logits(x), y.numpy()) == out.val_value


def test_a_prompt_that_never_beats_its_start_still_keeps_a_trained_checkpoint(tiny):
    """Validation labels are the start's own predictions and training pulls the other way, so no
    trained epoch beats the start on validation (at best it ties in accuracy, at a higher loss): the
    default rule keeps the best trained epoch all the same (the start is no candidate); the earlier
    rule, `val_metric_with_start`, keeps the start; `last` keeps the last step."""
    x = tiny.encode_image(torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    own = build_method("coop", tiny, ["a", "b"], {"n_ctx": 2}, seed=0)
    with torch.no_grad():
        y_valid = own.logits(x).argmax(1)  # what the start predicts: its validation accuracy is 1
    outs = {}
    for selection in ("val_metric", "val_loss", "last", "val_metric_with_start"):
        method = build_method("coop", tiny, ["a", "b"], {"n_ctx": 2}, seed=0)
        start = method.prompt_state()
        recipe = Recipe(epochs=4, lr=500.0, warmup_epochs=0, selection=selection)
        valid = Validation(x, y_valid.numpy(), slice(0, 2), "accuracy")
        outs[selection] = train(method, TrainSet.single(x, 1 - y_valid, 2), valid, recipe, seed=0)
        kept = outs[selection]
        assert kept.moved == (selection != "val_metric_with_start"), selection
        assert kept.moved == (not torch.equal(kept.state["tensors"]["ctx"], start["tensors"]["ctx"]))
    assert outs["val_metric_with_start"].best_epoch == -1
    assert outs["val_metric"].best_epoch >= 0 and outs["val_loss"].best_epoch >= 0
    assert outs["last"].best_epoch == outs["last"].epochs_run - 1 and len(outs["last"].history) == 1


def test_grad_clip_caps_the_norm_of_a_step(tiny):
    x = tiny.encode_image(torch.rand(8, 3, 32, 32))
    y = torch.tensor([0, 1] * 4)
    moves = {}
    for clip in (0.0, 1e-3):
        method = build_method("coop", tiny, ["a", "b"], {"n_ctx": 2}, seed=0)
        start = method.prompt_state()["tensors"]["ctx"]
        recipe = Recipe(epochs=1, lr=1.0, momentum=0.0, weight_decay=0.0, warmup_epochs=0, selection="last")
        recipe = dataclasses.replace(recipe, grad_clip=clip)
        out = train(
            method, TrainSet.single(x, y, 2), Validation(x, y.numpy(), slice(0, 2), "accuracy"), recipe, 0
        )
        moves[clip] = float((out.state["tensors"]["ctx"] - start).norm())
    assert moves[1e-3] == pytest.approx(1e-3, rel=1e-3) and moves[0.0] > 10 * moves[1e-3]
    with pytest.raises(MvlptError, match="grad_clip"):
        Recipe(grad_clip=-1.0)


def test_recipe_rejects_bad_values():
    with pytest.raises(MvlptError, match="precision 'fp8'"):
        Recipe(precision="fp8")
    with pytest.raises(MvlptError, match="batch_size"):
        Recipe(batch_size=0)


def _joint_set(n_target: int, n_source: int, label_space: str, sampling: str) -> TrainSet:
    task = torch.tensor([0] * n_target + [1] * n_source)
    targets = torch.tensor([i % 3 for i in range(n_target)] + [3 + i % 2 for i in range(n_source)])
    x = torch.zeros(n_target + n_source, 4)
    return TrainSet(x, targets, task, (slice(0, 3), slice(3, 5)), label_space, sampling)


def test_per_task_loss_sends_no_gradient_from_a_source_image_through_the_target_logits():
    data = _joint_set(2, 2, "per_task", "paired")
    logits = torch.randn(4, 5, requires_grad=True)
    joint_loss(logits, data.targets, data.task, data).backward()
    assert (logits.grad[2:, :3] == 0).all()  # source images: nothing through the target's slots
    assert (logits.grad[:2, 3:] == 0).all()  # and the reverse
    assert (logits.grad[2:, 3:] != 0).all() and (logits.grad[:2, :3] != 0).all()
    # paired: the target's term is its single cell's loss, the source's is added to it
    single = F.cross_entropy(logits[:2, :3], data.targets[:2])
    source = F.cross_entropy(logits[2:, 3:], data.targets[2:] - 3)
    assert joint_loss(logits, data.targets, data.task, data).item() == pytest.approx((single + source).item())

    union = _joint_set(2, 2, "union", "concat")
    logits.grad = None
    joint_loss(logits, union.targets, union.task, union).backward()
    assert (logits.grad[2:, :3] != 0).all()  # one softmax over every slot
    expected = F.cross_entropy(logits, union.targets)  # concat: the batch's mean
    assert joint_loss(logits, union.targets, union.task, union).item() == pytest.approx(expected.item())


def test_paired_batches_are_the_single_cells_plus_as_many_source_images():
    recipe = Recipe(epochs=3, batch_size=4, min_steps=10)
    single = epoch_batches(10, 0, recipe, seed=2, sampling="paired")
    paired = epoch_batches(10, 7, recipe, seed=2, sampling="paired")
    assert len(single) == len(paired) == epochs_for(recipe, 10)  # epochs counted over the target
    drawn = []
    for alone, together in zip(single, paired, strict=True):
        assert len(alone) == len(together)
        for a, b in zip(alone, together, strict=True):
            assert b[: len(a)].tolist() == a.tolist()  # the same target batch, step for step
            assert len(b) == 2 * len(a) and all(10 <= int(i) < 17 for i in b[len(a) :])
            drawn += b[len(a) :].tolist()
    counts = np.bincount(np.asarray(drawn) - 10)
    assert counts.max() - counts.min() <= 1  # the source stream walks permutations: even exposure
    assert (
        epoch_batches(10, 7, recipe, seed=3, sampling="paired")[0][0][4:].tolist()
        != paired[0][0][4:].tolist()
    )
    concat = epoch_batches(10, 7, recipe, seed=2, sampling="concat")
    assert len(concat) == epochs_for(recipe, 17)  # epochs counted over both
    assert all(sorted(torch.cat(e).tolist()) == list(range(17)) for e in concat)


def test_a_joint_cell_feeds_the_target_batches_of_its_single_cell(tiny):
    x_t, x_s = tiny.encode_image(torch.rand(6, 3, 32, 32)), tiny.encode_image(torch.rand(4, 3, 32, 32))
    y_t, y_s = torch.tensor([0, 1, 2] * 2), torch.tensor([0, 1] * 2)
    recipe = Recipe(epochs=2, batch_size=4, lr=0.1, warmup_epochs=0)

    def fed(data: TrainSet) -> list[torch.Tensor]:
        method = build_method("coop", tiny, ["a", "b", "c", "d", "e"][: data.slots[-1].stop], {"n_ctx": 2})
        seen, logits = [], method.logits
        method.logits = lambda x: (seen.append(x.detach().clone()), logits(x))[1]
        train(method, data, Validation(x_t, y_t.numpy(), data.slots[0], "accuracy"), recipe, seed=0)
        return seen

    alone = fed(TrainSet.single(x_t, y_t, 3))
    joint = TrainSet(
        torch.cat([x_t, x_s]),
        torch.cat([y_t, 3 + y_s]),
        torch.tensor([0] * 6 + [1] * 4),
        (slice(0, 3), slice(3, 5)),
    )
    together = fed(joint)
    assert len(alone) == len(together) == 4  # the single cell's steps: 2 epochs of 2 batches
    for a, b in zip(alone, together, strict=True):
        assert torch.equal(b[: len(a)], a) and len(b) == 2 * len(a)
