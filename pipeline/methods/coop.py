"""CoOp (Zhou et al. 2022): learned text context, shared by all classes or one per class (csc).

The image tower is untouched, so image features can be cached. A class-specific context is saved
under its class name, so in transfer it carries over to any class of the same name.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.clip import Backbone
from pipeline.errors import MvlptError
from pipeline.methods.state import check_state, make_state
from pipeline.methods.text import ContextPrompts, init_context

CSC_PREFIX = "ctx/"


@dataclass(frozen=True)
class CoOpConfig:
    n_ctx: int | None = None  # None: 16, or the token count of `init`
    init: str = ""  # words whose token embeddings initialise the context (else N(0, 0.02))
    position: str = "middle"  # where the class name sits among the context vectors
    csc: bool = False  # class-specific contexts: one context per class name


class CoOp(nn.Module):
    name = "coop"
    input_kind = "features"  # image features can be cached: only the text side learns

    def __init__(self, backbone: Backbone, classnames, config: CoOpConfig, generator: torch.Generator):
        super().__init__()
        self.backbone, self.classnames, self.csc = backbone, list(classnames), config.csc
        n_ctx = config.n_ctx
        if n_ctx is None:
            n_ctx = backbone.count_tokens(config.init) if config.init else 16
        if n_ctx < 1:
            raise MvlptError(f"coop: n_ctx must be at least 1, got {n_ctx}")
        if config.csc:
            ctx = torch.stack([init_context(backbone, n_ctx, config.init, generator) for _ in classnames])
        else:
            ctx = init_context(backbone, n_ctx, config.init, generator)
        self.ctx = nn.Parameter(ctx.to(backbone.device))  # (n_ctx, Dt) or (C, n_ctx, Dt)
        self.prompts = ContextPrompts(backbone, classnames, n_ctx, config.position)

    def class_features(self, classes: slice | None = None) -> torch.Tensor:
        return self.prompts.features(self.ctx, classes)  # (C, E)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)  # x: (B, E) cached raw features

    def logits(self, x: torch.Tensor, classes: slice | None = None) -> torch.Tensor:
        """(B, C) logits over every class, or over `classes` only (the text side runs for those)."""
        return self.backbone.logit_scale * self.image_features(x) @ self.class_features(classes).T

    def prompt_state(self) -> dict:
        if self.csc:
            return make_state(self.name, {CSC_PREFIX + c: self.ctx[i] for i, c in enumerate(self.classnames)})
        return make_state(self.name, {"ctx": self.ctx})

    def load_prompt_state(self, state: dict) -> None:
        """A shared context loads as is (or into every class of a csc prompt); class-specific
        contexts load into the classes of the same name and leave the others as initialised."""
        shape = self.ctx.shape[-2:]
        keys = set(state.get("tensors", {})) if isinstance(state, dict) else set()
        if keys and all(k.startswith(CSC_PREFIX) for k in keys):
            if not self.csc:
                raise MvlptError("coop prompt state has class-specific contexts; this coop is not csc")
            check_state(state, self.name, {k: shape for k in keys})
            with torch.no_grad():
                for i, c in enumerate(self.classnames):
                    if CSC_PREFIX + c in keys:
                        self.ctx[i].copy_(state["tensors"][CSC_PREFIX + c])
            return
        tensors = check_state(state, self.name, {"ctx": shape})
        with torch.no_grad():
            self.ctx.copy_(tensors["ctx"].expand_as(self.ctx))
