"""Text-side building blocks shared by the methods: templates and learned-context class prompts."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.clip import Backbone
from pipeline.errors import MvlptError

POSITIONS = ("end", "middle", "front")


def template_features(backbone: Backbone, classnames, template: str) -> torch.Tensor:
    """(C, E) L2-normalised features of `template` filled with each class name (frozen)."""
    if "{}" not in template:
        raise MvlptError(f"template '{template}' has no '{{}}' for the class name")
    with torch.no_grad():
        tokens = backbone.tokenize([template.format(c) for c in classnames])
        return F.normalize(backbone.encode_text(tokens).float(), dim=-1)


class ContextPrompts:
    """Class prompts '[SOS] ctx.. {class}. [EOT]' whose n_ctx context vectors are given per call.

    The class-name token embeddings are buffers of this object, never part of a prompt's state,
    so a learned context loads into prompts built for any other list of classes (CoOp's idea).
    """

    def __init__(self, backbone: Backbone, classnames, n_ctx: int, position: str = "end"):
        if position not in POSITIONS:
            raise MvlptError(f"unknown class token position '{position}' (known: {', '.join(POSITIONS)})")
        self.backbone, self.n_ctx, self.position = backbone, n_ctx, position
        ctx_slots = " ".join(["X"] * n_ctx)  # tokens whose embeddings the context replaces
        texts = [f"{ctx_slots} {name}." if n_ctx else f"{name}." for name in classnames]
        tokens = backbone.tokenize(texts)  # (C, L)
        with torch.no_grad():
            embedded = backbone.embed_tokens(tokens)  # (C, L, Dt)
        self.pool_idx = backbone.pool_index(tokens)  # (C,)
        self.prefix = embedded[:, :1]  # (C, 1, Dt) start token
        self.suffix = embedded[:, 1 + n_ctx :]  # (C, L-1-n_ctx, Dt) class tokens, '.', EOT, pad
        self.name_lens = [backbone.count_tokens(name) or 1 for name in classnames]

    def embeddings(self, ctx: torch.Tensor, classes: slice | None = None) -> torch.Tensor:
        """ctx (n_ctx, Dt) or (C, n_ctx, Dt) -> (C, L, Dt) prompt token embeddings; `classes`: of
        those classes only (a slice of the class list)."""
        prefix, suffix, name_lens = self.prefix, self.suffix, self.name_lens
        if classes is not None:
            prefix, suffix, name_lens = prefix[classes], suffix[classes], name_lens[classes]
            ctx = ctx[classes] if ctx.dim() == 3 else ctx
        n_cls = prefix.shape[0]
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(n_cls, -1, -1)  # (C, n_ctx, Dt)
        ctx = ctx.to(prefix.dtype)
        if self.position == "end":
            return torch.cat([prefix, ctx, suffix], dim=1)
        rows = []
        half = self.n_ctx // 2
        for i, n in enumerate(name_lens):
            name, rest = suffix[i : i + 1, :n], suffix[i : i + 1, n:]
            if self.position == "middle":
                parts = [
                    prefix[i : i + 1],
                    ctx[i : i + 1, :half],
                    name,
                    ctx[i : i + 1, half:],
                    rest,
                ]
            else:  # front
                parts = [prefix[i : i + 1], name, ctx[i : i + 1], rest]
            rows.append(torch.cat(parts, dim=1))
        return torch.cat(rows, dim=0)

    def features(self, ctx: torch.Tensor, classes: slice | None = None) -> torch.Tensor:
        """(C, E) L2-normalised class features for context `ctx` (of `classes` only, when given)."""
        pool_idx = self.pool_idx if classes is None else self.pool_idx[classes]
        x = self.backbone.encode_text_embedded(self.embeddings(ctx, classes), pool_idx, truncate=True)
        return F.normalize(x.float(), dim=-1)


def init_context(backbone: Backbone, n_ctx: int, init: str, generator: torch.Generator) -> torch.Tensor:
    """(n_ctx, Dt) context vectors: the token embeddings of `init` words, or N(0, 0.02)."""
    if init:
        n_words = backbone.count_tokens(init)
        tokens = backbone.tokenize([init])
        with torch.no_grad():
            emb = backbone.embed_tokens(tokens)[0, 1 : 1 + n_words].float().cpu()  # (n_words, Dt)
        if n_words != n_ctx:
            raise MvlptError(f"context init '{init}' has {n_words} tokens but n_ctx is {n_ctx}")
        return emb.clone()
    return torch.randn(n_ctx, backbone.text_width, generator=generator) * 0.02
