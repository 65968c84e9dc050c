"""VPT-deep (Jia et al. 2022): learned visual tokens at every layer; the text side is a fixed template."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.clip import Backbone
from pipeline.errors import MvlptError
from pipeline.methods.state import load_parameters, make_state
from pipeline.methods.text import template_features


@dataclass(frozen=True)
class VPTConfig:
    n_tokens: int = 16
    deep: bool = True  # a fresh set of tokens replaces the previous ones at every layer
    template: str = "a photo of a {}."
    # Gated (deep only): each layer's image tokens reach its prompts through an attention of
    # their own, added through tanh(gate) with the gate at zero, so tuning starts from zero-shot
    # rather than from a tower that random prompts have already moved.
    gated: bool = False


class VPT(nn.Module):
    name = "vpt"
    input_kind = "pixels"  # the prompted image tower runs every step

    def __init__(self, backbone: Backbone, classnames, config: VPTConfig, generator: torch.Generator):
        super().__init__()
        if not backbone.is_vit:
            raise MvlptError(f"vpt needs a ViT image tower; backbone '{backbone.name}' has none")
        if config.n_tokens < 1:
            raise MvlptError(f"vpt: n_tokens must be at least 1, got {config.n_tokens}")
        self.backbone = backbone
        if config.gated and not config.deep:
            raise MvlptError("vpt: gated prompts are deep prompts (set deep = true)")
        depth = backbone.vision_layers if config.deep else 1
        # VPT's init: U(-v, v) with v = sqrt(6 / (3 * patch^2 + width)), Xavier over the patch fan-in
        v = math.sqrt(6.0 / (3 * backbone.patch_size**2 + backbone.vision_width))
        tokens = torch.rand(depth, config.n_tokens, backbone.vision_width, generator=generator) * 2 * v - v
        self.tokens = nn.Parameter(tokens.to(backbone.device))  # (depth, P, Dv)
        self.gates = nn.Parameter(torch.zeros(depth, device=backbone.device)) if config.gated else None
        self.register_buffer("text", template_features(backbone, classnames, config.template))

    def class_features(self, classes: slice | None = None) -> torch.Tensor:
        return self.text if classes is None else self.text[classes]  # (C, E)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.backbone.encode_image(x, list(self.tokens), self.gates).float(), dim=-1)

    def logits(self, x: torch.Tensor, classes: slice | None = None) -> torch.Tensor:
        """(B, C) logits over every class, or over `classes` only."""
        return self.backbone.logit_scale * self.image_features(x) @ self.class_features(classes).T

    def prompt_state(self) -> dict:
        return make_state(self.name, dict(self.named_parameters()))  # tokens (and gates)

    def load_prompt_state(self, state: dict) -> None:
        load_parameters(self, state, self.name)
