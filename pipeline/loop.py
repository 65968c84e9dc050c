"""Plain train and evaluate loops: SGD, one warm-up epoch then cosine, best-validation selection."""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.errors import MvlptError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Recipe:
    """How a prompt is tuned (SPEC 4: the reference code's defaults for CLIP ViT-B/16)."""

    epochs: int = 200
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 32
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    precision: str = "auto"
    # At least this many optimizer steps: a small training set runs more epochs (as the CoOp paper
    # gives fewer shots more epochs), so a 4-shot task of 6 classes is not tuned in 10 steps.
    min_steps: int = 0

    def __post_init__(self):
        if self.epochs < 0:
            raise MvlptError(f"recipe: epochs must be non-negative, got {self.epochs}")
        if self.min_steps < 0:
            raise MvlptError(f"recipe: min_steps must be non-negative, got {self.min_steps}")
        if self.batch_size < 1:
            raise MvlptError(f"recipe: batch_size must be at least 1, got {self.batch_size}")
        if self.lr < 0 or self.warmup_lr < 0 or self.weight_decay < 0:
            raise MvlptError("recipe: lr, warmup_lr and weight_decay must be non-negative")
        if self.precision not in PRECISIONS:
            raise MvlptError(f"recipe: unknown precision '{self.precision}' (known: {', '.join(PRECISIONS)})")


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
) -> torch.Tensor:
    """(N, C) logits over all batches; class features are computed once."""
    was_training = method.training
    method.eval()
    device = method.backbone.device
    dtype = autocast_dtype(precision, device)
    out = []
    with _autocast(device, dtype):
        cls = method.class_features()  # (C, E)
        if columns is not None:
            cls = cls[columns]
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


@dataclass
class Trained:
    state: dict  # the best-validation prompt state
    best_epoch: int  # 0-based; -1 when no epoch ran
    epochs_run: int
    val_value: float
    history: list[float]


def train(
    method,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    val_inputs: torch.Tensor,
    val_targets: np.ndarray,
    metric: str,
    recipe: Recipe,
    seed: int,
    encode: Callable | None = None,
    val_columns: slice | None = None,
) -> Trained:
    """Tune `method` on (inputs, targets); keep the prompt with the best validation score.

    Ties on the validation metric go to the lower validation loss, then to the later epoch. `encode`
    maps a batch of inputs to what method.logits takes (used when features are not cached).
    """
    params = [p for p in method.parameters() if p.requires_grad]
    device = inputs.device
    dtype = autocast_dtype(recipe.precision, device)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    val_t = torch.as_tensor(val_targets, device=device)

    def validate() -> tuple[float, float]:
        logits = predict(method, _chunks(val_inputs, 256), encode, val_columns, recipe.precision)
        loss = float(loss_fn(logits, val_t.cpu()))
        return score(metric, logits, val_targets), loss

    best_val, best_loss = validate()
    best_state, best_epoch, history = copy.deepcopy(method.prompt_state()), -1, []
    epochs = epochs_for(recipe, len(inputs))
    if not params or epochs == 0:
        return Trained(best_state, -1, 0, best_val, history)
    optim = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    order_rng = torch.Generator().manual_seed(seed)
    method.train()
    for epoch in range(epochs):
        for group in optim.param_groups:
            group["lr"] = lr_at(recipe, epoch, epochs)
        perm = torch.randperm(len(inputs), generator=order_rng)
        for i in range(0, len(perm), recipe.batch_size):
            idx = perm[i : i + recipe.batch_size].to(device)
            x = inputs[idx]
            if encode is not None:
                with torch.no_grad():
                    x = encode(x)
            with _autocast(device, dtype):
                loss = loss_fn(method.logits(x), targets[idx])
            optim.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optim)
                scaler.update()
            else:
                loss.backward()
                optim.step()
        val, val_loss = validate()
        history.append(val)
        if (val, -val_loss) >= (best_val, -best_loss) or math.isnan(best_val):
            best_val, best_loss, best_epoch = val, val_loss, epoch
            best_state = copy.deepcopy(method.prompt_state())
    return Trained(best_state, best_epoch, epochs, best_val, history)
