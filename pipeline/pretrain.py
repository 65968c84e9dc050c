"""Seeded contrastive pre-training of the built-in small CLIP on generated image-caption pairs, cached.

The checkpoint is an open_clip state_dict under the cache directory, named by a hash of the model
config, the generator version and the recipe; it is written atomically and reused by later calls.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

ARCH = "mvlpt-small"
PRETRAIN_VERSION = 8  # bump when the training code changes what a recipe produces


@dataclass(frozen=True)
class PretrainRecipe:
    """How the small CLIP is pre-trained (AdamW for dense weights, SparseAdam for token embeddings)."""

    steps: int = 1550
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 60
    grouped_every: int = 2  # every n-th batch is built from hard-negative groups
    group_size: int = 16
    # Factor batches (see captions.FACTOR_BATCHES): every n-th batch, and all of the first steps,
    # so that position, count, shape and glyphs are in the image features before the text side
    # settles on what it can already see (colour, background).
    factor_every: int = 3
    factor_steps: int = 830
    seed: int = 0


def default_recipe() -> PretrainRecipe:
    """The shipped recipe; $MVLPT_PRETRAIN_STEPS shortens it (tests, quick looks): the step count
    is part of the checkpoint's key, so a short run never stands in for the real one."""
    steps = os.environ.get("MVLPT_PRETRAIN_STEPS")
    return PretrainRecipe(steps=int(steps)) if steps else PretrainRecipe()


def cache_dir() -> Path:
    """$MVLPT_CACHE (when set and not empty), else ~/.cache/mvlpt."""
    return Path(os.environ.get("MVLPT_CACHE") or Path.home() / ".cache" / "mvlpt")


def model_config() -> dict:
    return json.loads((Path(__file__).parent / "configs" / f"{ARCH}.json").read_text())


def checkpoint_key(recipe: PretrainRecipe | None = None) -> str:
    """Hash of everything that determines the weights: config, generator, recipe, code version."""
    from pipeline.data.scenes import GENERATOR_VERSION

    payload = {
        "config": model_config(),
        "generator": GENERATOR_VERSION,
        "recipe": dataclasses.asdict(recipe or default_recipe()),
        "pretrain": PRETRAIN_VERSION,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_path(recipe: PretrainRecipe | None = None, folder: str | os.PathLike | None = None) -> Path:
    recipe = recipe or default_recipe()
    return Path(folder or cache_dir()) / f"{ARCH}-{checkpoint_key(recipe)}.pt"


def pretrained_checkpoint(
    cache_dir: str | os.PathLike | None = None, recipe: PretrainRecipe | None = None
) -> Path:
    """The cached checkpoint for `recipe` (default: the shipped recipe), training it if absent."""
    recipe = recipe or default_recipe()
    path = checkpoint_path(recipe, cache_dir)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    log.info("pre-training %s (%d steps); checkpoint will be %s", ARCH, recipe.steps, path)
    state = pretrain(recipe)
    # hosts sharing the cache folder may have equal pids: the temporary name is unique to this writer
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def _normalizer(model) -> tuple[torch.Tensor, torch.Tensor]:
    cfg = model.visual.preprocess_cfg
    return torch.tensor(cfg["mean"]).view(1, 3, 1, 1), torch.tensor(cfg["std"]).view(1, 3, 1, 1)


def _optimizers(model, recipe: PretrainRecipe) -> list[torch.optim.Optimizer]:
    """SparseAdam for the token embedding (most parameters, few rows used a step), AdamW for the rest."""
    model.token_embedding.sparse = True
    emb = model.token_embedding.weight
    decay = [p for n, p in model.named_parameters() if p is not emb and p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p is not emb and p.ndim < 2]
    return [
        torch.optim.SparseAdam([emb], lr=recipe.lr),
        torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": recipe.weight_decay},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=recipe.lr,
        ),
    ]


def _lr(recipe: PretrainRecipe, step: int) -> float:
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    t = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return 0.5 * recipe.lr * (1 + math.cos(math.pi * t))


def _loss(model, images: torch.Tensor, tokens: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Symmetric contrastive loss; pairs with identical captions count as positives of each other."""
    img = F.normalize(model.encode_image(images), dim=-1)  # (B, E)
    txt = F.normalize(model.encode_text(tokens), dim=-1)  # (B, E)
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, B)
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (
        torch.sum(-target * logits.log_softmax(1), 1).mean()
        + torch.sum(-target * logits.log_softmax(0).T, 1).mean()
    )


def _factor_loss(model, images: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Images against the distinct captions of a factor batch, with the text side frozen.

    Trained from both sides, such a batch collapses: while the image tower cannot yet tell the
    values apart, the loss is lowest with every caption mapped to one vector, and then nothing
    is left for the image tower to learn from (seen: position at chance after 200 steps, text
    cosines at 1.0). Held fixed, the captions act as class prototypes (0.86 after 200 steps).
    """
    img = F.normalize(model.encode_image(images), dim=-1)  # (B, E)
    with torch.no_grad():
        txt = F.normalize(model.encode_text(tokens), dim=-1)  # (U, E), one per distinct caption
    logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T  # (B, U)
    return F.cross_entropy(logits, labels)


def pretrain(recipe: PretrainRecipe) -> dict:
    """Train the small CLIP from its seeded init on fresh generated pairs; returns its state_dict."""
    from tqdm import tqdm

    from pipeline.clip import create_trainable
    from pipeline.data.captions import factor_pairs, training_pairs

    model, tokenizer = create_trainable(ARCH, recipe.seed)
    torch.manual_seed(recipe.seed)
    mean, std = _normalizer(model)
    optims = _optimizers(model, recipe)
    model.train()
    start, last = time.perf_counter(), float("nan")
    bar = tqdm(range(recipe.steps), desc=f"pre-training {ARCH}", unit="step", mininterval=2.0)
    for step in bar:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([recipe.seed, step])))
        grouped = recipe.grouped_every > 0 and step % recipe.grouped_every == recipe.grouped_every - 1
        factor = step < recipe.factor_steps or (
            recipe.factor_every > 0 and step % recipe.factor_every == recipe.factor_every - 1
        )
        if factor:
            pixels, captions = factor_pairs(rng, recipe.batch_size)
        else:
            pixels, captions = training_pairs(rng, recipe.batch_size, recipe.group_size if grouped else 0)
        images = (torch.from_numpy(pixels).float() / 255 - mean) / std  # (B, 3, 32, 32)
        for opt in optims:
            for group in opt.param_groups:
                group["lr"] = _lr(recipe, step)
            opt.zero_grad(set_to_none=True)
        if factor:
            distinct = sorted(set(captions))
            labels = torch.tensor([distinct.index(c) for c in captions])
            loss = _factor_loss(model, images, tokenizer(distinct), labels)
        else:
            same = torch.tensor([[a == b for b in captions] for a in captions], dtype=torch.float32)
            loss = _loss(model, images, tokenizer(captions), same)
        loss.backward()
        for opt in optims:
            opt.step()
        value = loss.item()
        last = 0.9 * last + 0.1 * value if not math.isnan(last) else value
        bar.set_postfix(loss=f"{last:.3f}")
        if (step + 1) % 100 == 0:
            log.info(
                "step %d/%d loss %.3f (%.0f s)",
                step + 1,
                recipe.steps,
                last,
                time.perf_counter() - start,
            )
    model.token_embedding.sparse = False
    log.info("pre-trained %s in %.0f s, final loss %.3f", ARCH, time.perf_counter() - start, last)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
