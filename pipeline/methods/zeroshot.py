"""Zero-shot CLIP: the frozen model with a hand-made template; nothing is learned."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.clip import Backbone
from pipeline.methods.state import check_state, make_state
from pipeline.methods.text import template_features


@dataclass(frozen=True)
class ZeroShotConfig:
    template: str = "a photo of a {}."


class ZeroShot(nn.Module):
    name = "zeroshot"
    input_kind = "features"  # frozen image features: the image tower runs once per image

    def __init__(self, backbone: Backbone, classnames, config: ZeroShotConfig, generator: torch.Generator):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("text", template_features(backbone, classnames, config.template))

    def use_templates(self, classnames, templates) -> None:
        """Class features from several templates (a task's own): each class's mean over the templates
        of its normalised features, normalised again (CLIP's prompt ensemble)."""
        feats = torch.stack([template_features(self.backbone, classnames, t) for t in templates])  # (T, C, E)
        self.text = F.normalize(feats.mean(dim=0), dim=-1)

    def class_features(self, classes: slice | None = None) -> torch.Tensor:
        return self.text if classes is None else self.text[classes]  # (C, E)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), dim=-1)  # x: (B, E) cached raw features

    def logits(self, x: torch.Tensor, classes: slice | None = None) -> torch.Tensor:
        return self.backbone.logit_scale * self.image_features(x) @ self.class_features(classes).T

    def prompt_state(self) -> dict:
        return make_state(self.name, {})

    def load_prompt_state(self, state: dict) -> None:
        check_state(state, self.name, {})
