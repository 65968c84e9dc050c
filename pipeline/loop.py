"""Plain train and evaluate loops: SGD, one warm-up epoch then cosine, best-validation selection."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import MvlptError
from pipeline.recipe import Recipe


def epochs_for(recipe: Recipe, n: int) -> int:
    """Epochs to run over n training inputs: recipe.epochs, more if that is under min_steps steps."""
    if recipe.epochs == 0:
        return 0
    per_epoch = max(1, math.ceil(n / recipe.batch_size))
    return max(recipe.epochs, math.ceil(recipe.min_steps / per_epoch))


def lr_at(recipe: Recipe, epoch: int, epochs: int | None = None) -> float:
    """Constant warm-up lr for the first warm-up epochs, then cosine from lr to 0 over all epochs."""
    epochs = recipe.epochs if epochs is None else epochs
    if epoch < recipe.warmup_epochs and epochs > recipe.warmup_epochs:
        return recipe.warmup_lr
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * epoch / max(epochs, 1)))


def pick_device(requested: str = "auto") -> torch.device:
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise MvlptError(f"device '{requested}' asked but CUDA is not available")
    return torch.device(requested)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None means full fp32. 'auto' is bf16 (or fp16) on CUDA and fp32 on CPU (bit-reproducible)."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


# ---- metrics ------------------------------------------------------------------------------------


def _average_precision_11(scores: np.ndarray, positives: np.ndarray) -> float:
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(np.float64)
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / max(hits.sum(), 1)
    points = [precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)]
    return float(np.mean(points))


def _roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    pos = positives.astype(bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):  # average ranks over ties
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def score(metric: str, logits: torch.Tensor | np.ndarray, targets: np.ndarray) -> float:
    """The task's metric as a fraction in [0, 1]."""
    logits = logits.detach().float().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
    targets = np.asarray(targets)
    if len(targets) == 0:
        return float("nan")
    if metric == "accuracy":
        return float((logits.argmax(1) == targets).mean())
    if metric == "mean_per_class":
        pred = logits.argmax(1)
        per_class = [(pred[targets == c] == c).mean() for c in np.unique(targets)]
        return float(np.mean(per_class))
    if metric == "map11":
        aps = [
            _average_precision_11(logits[:, c], targets[:, c])
            for c in range(targets.shape[1])
            if targets[:, c].any()
        ]
        return float(np.mean(aps)) if aps else float("nan")
    if metric == "roc_auc":
        shifted = logits - logits.max(1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True)
        return _roc_auc(probs[:, 1], targets == 1)
    raise MvlptError(f"unknown metric '{metric}'")


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy; multi-hot targets (B, C) become a distribution over their positive classes."""
    if targets.dim() == 2:
        soft = targets.float() / targets.float().sum(1, keepdim=True).clamp_min(1)
        return torch.sum(-soft * F.log_softmax(logits.float(), dim=1), dim=1).mean()
    return F.cross_entropy(logits.float(), targets)


# ---- loops ---------------------------------------------------------------------------------------


@torch.no_grad()
def predict(
    method,
    batches: Iterable[torch.Tensor],
    encode: Callable | None = None,
    columns: slice | None = None,
    precision: str = "auto",
    only_columns: bool = False,
) -> torch.Tensor:
    """(N, C) logits over all batches, over `columns` of the classes when given; class features are
    computed once, for every class then cut to `columns` (the path every stored cell took), or with
    `only_columns` for those classes alone (a multitask cell's validation: one task's of many)."""
    was_training = method.training
    method.eval()
    device = method.backbone.device
    dtype = autocast_dtype(precision, device)
    out = []
    with _autocast(device, dtype):
        if only_columns:
            cls = method.class_features(columns)  # (C, E)
        else:
            cls = method.class_features()
            cls = cls if columns is None else cls[columns]
        for x in batches:
            if encode is not None:
                x = encode(x)
            out.append((method.backbone.logit_scale * method.image_features(x) @ cls.T).float().cpu())
    method.train(was_training)
    if not out:
        return torch.empty(0, cls.shape[0])
    return torch.cat(out)


def _chunks(x: torch.Tensor, size: int):
    for i in range(0, len(x), size):
        yield x[i : i + size]


@dataclass(frozen=True)
class TrainSet:
    """What a prompt is tuned on: the target's images first, then any source tasks' images.

    Labels are class ids over the joint label space, in which task k owns the columns `slots[k]`
    (the target is task 0), or multi-hot rows over it. A single cell is one task and one slot.
    """

    inputs: torch.Tensor  # (N, ...) features or pixels
    targets: torch.Tensor  # (N,) class ids over all slots, or (N, C) multi-hot
    task: torch.Tensor  # (N,) which task each image belongs to: 0 = target, k >= 1 = source
    slots: tuple[slice, ...]  # per task, its columns of the joint label space
    label_space: str = "per_task"  # LABEL_SPACES: softmax over the image's own task, or over all
    sampling: str = "paired"  # JOINT_SAMPLINGS, or "set": a multitask cell, every task alike
    budget: str = "equal"  # a multitask cell's steps (BUDGETS in pipeline.cell): see set_batches
    mirror: bool = False  # the self control: task 1 is a copy of the target, batched with it

    @classmethod
    def single(cls, inputs: torch.Tensor, targets: torch.Tensor, num_classes: int) -> TrainSet:
        task = torch.zeros(len(inputs), dtype=torch.long, device=inputs.device)
        return cls(inputs, targets, task, (slice(0, num_classes),))

    @property
    def n_target(self) -> int:
        return int((self.task == 0).sum())

    def sizes(self) -> list[int]:
        """Images per task, in task order."""
        return torch.bincount(self.task, minlength=len(self.slots)).tolist()


def epoch_batches(
    n_target: int, n_source: int, recipe: Recipe, seed: int, sampling: str, mirror: bool = False
):
    """The batches of every epoch, as index tensors into a TrainSet (target first, then sources).

    Without sources, and in `paired` sampling, the target's batches are those of its single cell:
    one seeded permutation of its images per epoch, over epochs_for(recipe, n_target) epochs;
    `paired` appends to each batch as many source images, drawn by a second seeded stream that
    walks through permutations of the source images. `mirror` (the `self` control: the source is a
    copy of the target) appends instead the copies of the batch's own images, so the step counts its
    batch twice and sees nothing new. `concat` shuffles all images together and counts epochs over
    all of them. (A multitask cell's batches: set_batches.)
    """
    order_rng = torch.Generator().manual_seed(seed)
    if sampling == "concat" and n_source:
        n = n_target + n_source
        return [
            list(torch.randperm(n, generator=order_rng).split(recipe.batch_size))
            for _ in range(epochs_for(recipe, n))
        ]
    source_rng = torch.Generator().manual_seed(seed + (1 << 32))  # never the order stream's seed
    stream: list[int] = []
    epochs = []
    for _ in range(epochs_for(recipe, n_target)):
        batches = []
        for batch in torch.randperm(n_target, generator=order_rng).split(recipe.batch_size):
            if mirror and n_source:
                batch = torch.cat([batch, batch + n_target])
            elif n_source:
                while len(stream) < len(batch):
                    stream += (n_target + torch.randperm(n_source, generator=source_rng)).tolist()
                drawn, stream = stream[: len(batch)], stream[len(batch) :]
                batch = torch.cat([batch, torch.as_tensor(drawn, dtype=batch.dtype)])
            batches.append(batch)
        epochs.append(batches)
    return epochs


def _task_streams(sizes: Sequence[int], recipe: Recipe, seed: int) -> list[list[torch.Tensor]]:
    """Per task of a set, its single cell's batches in order (epochs_for its size, one seeded
    permutation an epoch), as index tensors into the set's images."""
    order_rng = torch.Generator().manual_seed(seed)
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    return [
        [
            offsets[k] + part
            for _ in range(epochs_for(recipe, size))
            for part in torch.randperm(size, generator=order_rng).split(recipe.batch_size)
        ]
        for k, size in enumerate(sizes)
    ]


def set_batches(sizes: Sequence[int], recipe: Recipe, seed: int, budget: str = "equal"):
    """A multitask cell's batches (its tasks' images one after the other, `sizes` of them), every
    batch from one task, so a step runs the text side for that task's classes only.

    `per_task` (the reference's schedule: epochs counted over all the set's shots): each task gets its
    single cell's batches, the tasks interleaved so that each is spread evenly over the run (the next
    step goes to the task least far through its own batches, ties by a seeded order); the steps are
    cut into as many epochs as a single cell of the tasks' mean size runs. `equal` (a named control):
    the epochs and steps of one single cell of the tasks' mean size, tasks taking turns in seeded
    rounds. Under either budget a set of one task is its single cell batch for batch.
    """
    n_mean = max(1, round(sum(sizes) / len(sizes)))
    n_epochs = epochs_for(recipe, n_mean)
    if budget == "per_task":
        streams = _task_streams(sizes, recipe, seed)
        tie = torch.randperm(len(sizes), generator=torch.Generator().manual_seed(seed + (2 << 32))).tolist()
        done = [0] * len(sizes)
        steps = []
        for _ in range(sum(map(len, streams))):
            k = min(
                (k for k in range(len(sizes)) if done[k] < len(streams[k])),
                key=lambda k: ((done[k] + 0.5) / len(streams[k]), tie.index(k)),
            )
            steps.append(streams[k][done[k]])
            done[k] += 1
        n_epochs = min(n_epochs, len(steps)) if steps else 0
        cuts = np.linspace(0, len(steps), n_epochs + 1).round().astype(int)
        return [steps[a:b] for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    order_rng = torch.Generator().manual_seed(seed)
    turn_rng = torch.Generator().manual_seed(seed + (2 << 32))  # neither the order nor the source stream
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()
    queues: list[list[torch.Tensor]] = [[] for _ in sizes]
    turns: list[int] = []
    epochs = []
    for _ in range(n_epochs):
        batches = []
        for _ in range(math.ceil(n_mean / recipe.batch_size)):
            if not turns:
                turns = torch.randperm(len(sizes), generator=turn_rng).tolist()
            k = turns.pop(0)
            if not queues[k]:
                queues[k] = list(
                    (offsets[k] + torch.randperm(sizes[k], generator=order_rng)).split(recipe.batch_size)
                )
            batches.append(queues[k].pop(0))
        epochs.append(batches)
    return epochs


def _image_losses(logits: torch.Tensor, targets: torch.Tensor, columns: slice) -> torch.Tensor:
    """(B,) cross-entropy of each image over `columns` (multi-hot: over its positive set)."""
    sub = logits[:, columns].float()
    if targets.dim() == 2:
        soft = targets[:, columns].float()
        soft = soft / soft.sum(1, keepdim=True).clamp_min(1)
        return torch.sum(-soft * F.log_softmax(sub, dim=1), dim=1)
    return F.cross_entropy(sub, targets - (columns.start or 0), reduction="none")


def _task_loss(logits: torch.Tensor, targets: torch.Tensor, columns: slice) -> torch.Tensor:
    """The mean loss of one task's images from logits over that task's classes only."""
    own = targets[:, columns] if targets.dim() == 2 else targets - (columns.start or 0)
    return _image_losses(logits, own, slice(0, logits.shape[1])).mean()


def joint_loss(
    logits: torch.Tensor, targets: torch.Tensor, task: torch.Tensor, data: TrainSet
) -> torch.Tensor:
    """The batch loss. `per_task`: each image's softmax over its own task's slots, so a source
    image sends no gradient through the target's logits; `union`: over every slot. `paired` sums
    each task's mean loss (the target's term is its single cell's loss); `concat` averages over
    the batch."""
    if len(data.slots) == 1:  # a single cell: its task's mean loss
        return _image_losses(logits, targets, data.slots[0]).mean()
    everything = slice(0, logits.shape[1])
    losses = torch.empty(len(targets), device=logits.device)
    means = []
    for k, columns in enumerate(data.slots):
        rows = (task == k).nonzero().squeeze(1)
        if len(rows) == 0:
            continue
        own = _image_losses(
            logits[rows], targets[rows], columns if data.label_space == "per_task" else everything
        )
        losses[rows] = own
        means.append(own.mean())
    if data.sampling == "paired":
        return torch.stack(means).sum()
    return losses.mean()


@dataclass
class Trained:
    state: dict  # the selected prompt state
    best_epoch: int  # 0-based; -1 when no epoch ran (or the start was selected)
    epochs_run: int
    val_value: float
    history: list[float]
    moved: bool  # whether the selected prompt differs from the one training started from


@dataclass(frozen=True)
class Validation:
    """One task's held-out validation shots: inputs, labels over its own classes, the task's columns
    of the label space and its metric."""

    inputs: torch.Tensor
    targets: np.ndarray
    columns: slice
    metric: str


def _validator(method, sets: Sequence[Validation], precision: str, encode):
    """A function scoring `method` on validation sets -> (metric, loss), each the mean over the sets
    (a multitask cell's tasks; one set for any other cell)."""
    labels = [torch.as_tensor(v.targets).cpu() for v in sets]

    def validate() -> tuple[float, float]:
        values, losses = [], []
        for v, targets_t in zip(sets, labels, strict=True):
            logits = predict(method, _chunks(v.inputs, 256), encode, v.columns, precision, len(sets) > 1)
            values.append(score(v.metric, logits, v.targets))
            losses.append(float(loss_fn(logits, targets_t)))
        return sum(values) / len(values), sum(losses) / len(losses)

    return validate


def _train_epoch(method, data: TrainSet, batches, optim, scaler, dtype, encode, clip: float = 0.0) -> None:
    """One optimizer step per batch of index tensors into `data`; `clip` > 0 caps the gradient's norm."""
    params = [p for group in optim.param_groups for p in group["params"]]
    device = data.inputs.device
    for batch in batches:
        idx = batch.to(device)
        x = data.inputs[idx]
        if encode is not None:
            with torch.no_grad():
                x = encode(x)
        with _autocast(device, dtype):
            if data.sampling == "set":  # one task's batch: its own classes only
                columns = data.slots[int(data.task[idx[0]])]
                classes = columns if len(data.slots) > 1 else None  # one task: all classes are its
                loss = _task_loss(method.logits(x, classes), data.targets[idx], columns)
            else:
                loss = joint_loss(method.logits(x), data.targets[idx], data.task[idx], data)
        optim.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if clip > 0:
                scaler.unscale_(optim)
                torch.nn.utils.clip_grad_norm_(params, clip)
            scaler.step(optim)
            scaler.update()
        else:
            loss.backward()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            optim.step()


def _better(selection: str, candidate: tuple[float, float], best: tuple[float, float] | None) -> bool:
    """Whether a checkpoint scored (validation metric, validation loss) replaces the best so far:
    `val_loss` by the lower loss; otherwise the higher metric, ties to the lower loss, then to the
    later checkpoint; `last`: always. A NaN metric (no validation set) never blocks a later one."""
    if best is None or selection == "last":
        return True
    (val, loss), (best_val, best_loss) = candidate, best
    if selection == "val_loss":
        return loss <= best_loss or math.isnan(best_loss)
    return (val, -loss) >= (best_val, -best_loss) or math.isnan(best_val)


def _moved(start: dict, state: dict) -> bool:
    """Whether any tensor of a prompt state differs from the start's."""
    a, b = start["tensors"], state["tensors"]
    return any(not torch.equal(a[k], b[k]) for k in a)


def train(
    method,
    data: TrainSet,
    validation: Validation | Sequence[Validation],
    recipe: Recipe,
    seed: int,
    encode: Callable | None = None,
) -> Trained:
    """Tune `method` on `data`; keep the checkpoint that recipe.selection picks (pipeline.recipe).

    Validation scores the target's slots only (one Validation over data.slots[0]; a multitask cell:
    the mean over its tasks), once per epoch of the recipe. Only trained checkpoints are candidates,
    unless the selection is `val_metric_with_start`. `encode` maps a batch of inputs to what
    method.logits takes (used when features are not cached).
    """
    params = [p for p in method.parameters() if p.requires_grad]
    device = data.inputs.device
    dtype = autocast_dtype(recipe.precision, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    sets = [validation] if isinstance(validation, Validation) else list(validation)
    validate = _validator(method, sets, recipe.precision, encode)

    start = copy.deepcopy(method.prompt_state())
    n_target = data.n_target
    if data.sampling == "set":
        plan = set_batches(data.sizes(), recipe, seed, data.budget)
    else:
        plan = epoch_batches(n_target, len(data.inputs) - n_target, recipe, seed, data.sampling, data.mirror)
    untrained = not params or not plan
    # the start is scored only where it is a candidate (or all there is)
    best = validate() if untrained or recipe.selection == "val_metric_with_start" else None
    best_state, best_epoch, history = start, -1, []
    if untrained:
        return Trained(start, -1, 0, best[0], history, False)
    optim = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    # validate once an epoch of the recipe: when min_steps stretches a small training set over more
    # (shorter) epochs, every `every` of them, and after the last; `last` validates the last alone
    every = max(1, math.ceil(len(plan) / max(recipe.epochs, 1)))
    method.train()
    for epoch, batches in enumerate(plan):
        for group in optim.param_groups:
            group["lr"] = lr_at(recipe, epoch, len(plan))
        _train_epoch(method, data, batches, optim, scaler, dtype, encode, recipe.grad_clip)
        final = epoch + 1 == len(plan)
        if not final and ((epoch + 1) % every or recipe.selection == "last"):
            continue
        scored = validate()
        history.append(scored[0])
        if _better(recipe.selection, scored, best):
            best, best_epoch = scored, epoch
            best_state = copy.deepcopy(method.prompt_state())
    return Trained(best_state, best_epoch, len(plan), best[0], history, _moved(start, best_state))
