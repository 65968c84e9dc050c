"""CoOp (Zhou et al. 2022): learned text context shared by all classes; the image tower is untouched."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.clip import Backbone
from pipeline.errors import MvlptError
from pipeline.methods.state import check_state, make_state
from pipeline.methods.text import ContextPrompts, init_context


@dataclass(frozen=True)
class CoOpConfig:
    n_ctx: int | None = None  # None: 16, or the token count of `init`
    init: str = ""  # words whose token embeddings initialise the context (else N(0, 0.02))
    position: str = "middle"  # where the class name sits among the context vectors


class CoOp(nn.Module):
    name = "coop"
    input_kind = "features"  # image features can be cached: only the text side learns

    def __init__(self, backbone: Backbone, classnames, config: CoOpConfig, generator: torch.Generator):
        super().__init__()
        self.backbone = backbone
        n_ctx = config.n_ctx
        if n_ctx is None:
            n_ctx = backbone.count_tokens(config.init) if config.init else 16
        if n_ctx < 1:
            raise MvlptError(f"coop: n_ctx must be at least 1, got {n_ctx}")
        self.ctx = nn.Parameter(init_context(backbone, n_ctx, config.init, generator).to(backbone.device))
        self.prompts = ContextPrompts(backbone, classnames, n_ctx, config.position)

    def class_features(self) -> torch.Tensor:
        return self.prompts.features(self.ctx)  # (C, E)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)  # x: (B, E) cached raw features

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.logit_scale * self.image_features(x) @ self.class_features().T  # (B, C)

    def prompt_state(self) -> dict:
        return make_state(self.name, {"ctx": self.ctx})

    def load_prompt_state(self, state: dict) -> None:
        tensors = check_state(state, self.name, {"ctx": self.ctx.shape})
        with torch.no_grad():
            self.ctx.copy_(tensors["ctx"])
