"""How a prompt is tuned: the recipe, a typed value with no heavy imports (specs read it)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import MvlptError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# Which checkpoint a cell keeps. `val_metric`: the trained epoch with the best validation score (ties
# to the lower validation loss, then the later epoch), the reference trainer's rule: the untuned start
# is never a candidate, or a validation set of one image per class keeps it in half the cells.
# `val_loss`: the trained epoch with the lowest validation loss. `last`: the last step (no choice,
# so no validation noise). `val_metric_with_start`: `val_metric` with the start as a candidate too
# (this project's earlier rule, kept so that a spec can ask for it).
SELECTIONS = ("val_metric", "val_loss", "last", "val_metric_with_start")


@dataclass(frozen=True)
class Recipe:
    """How a prompt is tuned; the defaults are the reference code's for CLIP ViT-B/16."""

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
    selection: str = "val_metric"  # SELECTIONS
    # the largest L2 norm of a step's gradient over the prompt's parameters; 0: not clipped (the
    # reference's). A prompt generator (UPT) can take one step so large that the prompt collapses.
    grad_clip: float = 0.0

    def __post_init__(self):
        if self.epochs < 0:
            raise MvlptError(f"recipe: epochs must be non-negative, got {self.epochs}")
        if self.min_steps < 0:
            raise MvlptError(f"recipe: min_steps must be non-negative, got {self.min_steps}")
        if self.batch_size < 1:
            raise MvlptError(f"recipe: batch_size must be at least 1, got {self.batch_size}")
        if self.lr < 0 or self.warmup_lr < 0 or self.weight_decay < 0 or self.grad_clip < 0:
            raise MvlptError("recipe: lr, warmup_lr, weight_decay and grad_clip must be non-negative")
        if self.precision not in PRECISIONS:
            raise MvlptError(f"recipe: unknown precision '{self.precision}' (known: {', '.join(PRECISIONS)})")
        if self.selection not in SELECTIONS:
            raise MvlptError(f"recipe: unknown selection '{self.selection}' (known: {', '.join(SELECTIONS)})")
