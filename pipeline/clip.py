"""The only module that touches open_clip internals: a frozen CLIP whose encoders take prompts."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from pipeline.errors import MvlptError

CONFIG_DIR = Path(__file__).parent / "configs"  # the shipped open_clip configs, named by file


def register_shipped_configs() -> None:
    """Make the configs in configs/ known to open_clip by their file names."""
    import open_clip

    if not {p.stem for p in CONFIG_DIR.glob("*.json")} <= set(open_clip.list_models()):
        open_clip.add_model_config(CONFIG_DIR)


def create_trainable(arch: str, seed: int = 0):
    """A fresh, trainable open_clip model of a shipped config and its tokenizer (for pre-training)."""
    import open_clip

    register_shipped_configs()
    with torch.random.fork_rng(devices=[]), _quiet_root_logger(True):
        torch.manual_seed(seed)
        model = open_clip.create_model(arch)
    return model, open_clip.get_tokenizer(arch)


def known_architecture(arch: str) -> bool:
    """Whether open_clip (with the shipped configs) has a model config named `arch`."""
    import open_clip

    register_shipped_configs()
    return arch in open_clip.list_models()


def architecture_config(arch: str) -> dict:
    """The open_clip model config of `arch` ({} when it has none)."""
    import open_clip

    register_shipped_configs()
    return dict(open_clip.get_model_config(arch) or {})


def pretrained_tag(arch: str, tag: str) -> dict:
    """open_clip's description of the pretrained weights `tag` of `arch` ({} when unknown)."""
    import open_clip

    return dict(open_clip.get_pretrained_cfg(arch, tag) or {})


def pretrained_tags(arch: str) -> list[str]:
    """The pretrained tags open_clip knows for `arch`."""
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(arch))


def library_versions() -> str:
    """The versions of the libraries that compute features: a new release may change their last bits."""
    import open_clip

    return f"torch {torch.__version__}|open_clip {open_clip.__version__}"


def create_frozen(arch: str, weights: str | None, cache_dir: str | None, quick_gelu: bool):
    """An open_clip model of `arch` with `weights` (None: the config's seed-0 random init), frozen in
    eval mode on the CPU, and its tokenizer."""
    import open_clip

    register_shipped_configs()
    with torch.random.fork_rng(devices=[]), _quiet_root_logger(weights is None):
        torch.manual_seed(0)  # shipped configs without weights are this exact random init
        model = open_clip.create_model(
            arch, pretrained=weights, cache_dir=cache_dir, force_quick_gelu=quick_gelu
        )
    model = model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, open_clip.get_tokenizer(arch)


class Backbone:
    """A frozen open_clip CLIP whose text and image encoders accept prompt tokens."""

    def __init__(self, model, tokenizer, name: str, identity: str, device: torch.device):
        if not hasattr(model, "token_embedding"):
            raise MvlptError(f"backbone '{name}' has a text tower mvlpt cannot prompt")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name  # as the user wrote it
        self.identity = identity
        self.device = device
        self.preprocess_cfg = dict(model.visual.preprocess_cfg)
        self.context_length = int(model.context_length)
        self.text_width = int(model.token_embedding.weight.shape[1])
        self.embed_dim = (
            int(model.text_projection.shape[-1]) if model.text_projection is not None else self.text_width
        )
        v = model.visual
        self.is_vit = hasattr(v, "conv1") and hasattr(v, "class_embedding")
        self.vision_width = int(v.class_embedding.shape[0]) if self.is_vit else 0
        self.vision_layers = len(v.transformer.resblocks) if self.is_vit else 0
        self.patch_size = int(v.patch_size[0]) if self.is_vit else 0
        size = self.preprocess_cfg["size"]
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self.logit_scale = float(model.logit_scale.exp().item())
        self.preprocess = Preprocess(self.preprocess_cfg)

    # ---- text -------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(N, L) token ids; a text longer than the context is an error, not a silent cut."""
        for text in texts:
            n = self.count_tokens(text)
            if n is not None and n + 2 > self.context_length:
                raise MvlptError(
                    f"text too long for backbone '{self.name}' "
                    f"({n} tokens, context {self.context_length}): '{text}'"
                )
        return self.tokenizer(texts).to(self.device)

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` without start/end markers (None where the tokenizer cannot tell)."""
        encode = getattr(self.tokenizer, "encode", None)
        return len(encode(text)) if encode is not None else None

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L) ids -> (N, L, Dt) token embeddings, before positions are added."""
        return self.model.token_embedding(tokens)

    def pool_index(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N,) position whose output is the text feature, as the model's own pooling picks it."""
        pool = self.model.text_pool_type
        n, length = tokens.shape
        if pool == "argmax":
            return tokens.argmax(dim=-1)
        if pool == "eos":
            return (tokens == self.model.text_eos_id).int().argmax(dim=-1)
        if pool == "last":
            return torch.full((n,), length - 1, device=tokens.device)
        if pool == "first":
            return torch.zeros(n, dtype=torch.long, device=tokens.device)
        raise MvlptError(f"backbone '{self.name}' pools text with '{pool}', not supported")

    def encode_text_embedded(
        self, x: torch.Tensor, pool_idx: torch.Tensor, truncate: bool = False
    ) -> torch.Tensor:
        """(N, L, Dt) token embeddings (prompts already in place) -> (N, E) text features.

        truncate: under a causal mask nothing after the pooled position reaches the output, so
        the sequence is cut there (class prompts are ~20 tokens of a 77-token context). Same
        function, fewer FLOPs; numerically equal up to float rounding, so the parity path keeps
        the full length.
        """
        m = self.model
        cast = m.transformer.get_cast_dtype()
        mask = m.attn_mask
        if truncate and mask is not None:
            length = int(pool_idx.max()) + 1
            x, mask = x[:, :length], mask[:length, :length]
        x = x.to(cast) + m.positional_embedding[: x.shape[1]].to(cast)  # (N, L, Dt)
        x = m.transformer(x, attn_mask=mask)
        x = m.ln_final(x)
        x = x[torch.arange(x.shape[0], device=x.device), pool_idx]  # (N, Dt)
        if m.text_projection is not None:
            x = (
                m.text_projection(x)
                if isinstance(m.text_projection, torch.nn.Linear)
                else x @ m.text_projection
            )
        return x

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(N, L) ids -> (N, E), the prompt-free path (equals model.encode_text)."""
        return self.encode_text_embedded(self.embed_tokens(tokens), self.pool_index(tokens))

    # ---- images -----------------------------------------------------------------------------
    def encode_image(
        self,
        images: torch.Tensor,
        prompts: list[torch.Tensor] | None = None,
        gates: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, 3, H, W) -> (B, E). `prompts[i]` (P, Dv) replaces the prompt tokens before layer i.

        prompts[0] is inserted after the class token before ln_pre; a later entry overwrites the
        P tokens after the class token at the input of its layer (deep VPT). None entries beyond 0
        keep the previous layer's prompt outputs. With no prompts this equals model.encode_image.

        With `gates` (one per layer), the prompts are not put in the sequence: at layer i the
        image tokens attend to prompts[i] in an attention of their own whose output is added
        scaled by tanh(gates[i]), so gates at zero leave the tower exactly as it was.
        """
        v = self.model.visual
        if not self.is_vit:
            if prompts:
                raise MvlptError(f"visual prompts need a ViT image tower; '{self.name}' has none")
            return v(images)
        x = v.conv1(images.to(v.conv1.weight.dtype))  # (B, Dv, g, g)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # (B, g*g, Dv)
        cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)  # (B, 1+g*g, Dv)
        x = v.patch_dropout(x)
        if gates is not None:
            return self._gated_tower(x, prompts, gates)
        n_prompt = 0
        if prompts:
            p0 = prompts[0].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, P, Dv)
            n_prompt = p0.shape[1]
            x = torch.cat([x[:, :1], p0, x[:, 1:]], dim=1)  # (B, 1+P+g*g, Dv)
        x = v.ln_pre(x)
        batch_first = getattr(v.transformer, "batch_first", True)
        for i, block in enumerate(v.transformer.resblocks):
            if prompts and 0 < i < len(prompts) and prompts[i] is not None:
                pi = prompts[i].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
                x = torch.cat([x[:, :1], pi, x[:, 1 + n_prompt :]], dim=1)
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        if n_prompt and v.pool_type == "avg":
            x = torch.cat([x[:, :1], x[:, 1 + n_prompt :]], dim=1)  # pool over patches only
        return self._project(x)

    def _project(self, x: torch.Tensor) -> torch.Tensor:
        v = self.model.visual
        pooled, _ = v._pool(x)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return pooled

    def _gated_tower(self, x: torch.Tensor, prompts: list[torch.Tensor], gates: torch.Tensor) -> torch.Tensor:
        """The image tower with deep prompts reached through zero-initialisable gated attention."""
        v = self.model.visual
        blocks = v.transformer.resblocks
        if len(prompts) != len(blocks) or len(gates) != len(blocks):
            raise MvlptError(f"gated visual prompts need one prompt and one gate per layer ({len(blocks)})")
        x = v.ln_pre(x)  # (B, L, Dv)
        batch = x.shape[0]
        for block, p, gate in zip(blocks, prompts, gates, strict=True):
            attn = block.attn
            dim, heads = attn.embed_dim, attn.num_heads
            w, b = attn.in_proj_weight, attn.in_proj_bias
            q, k, val = (_heads(t, heads, batch) for t in F.linear(block.ln_1(x), w, b).split(dim, dim=-1))
            # the prompts' keys and values once, not once per image
            pk, pv = F.linear(block.ln_1(p.to(x.dtype)), w[dim:], b[dim:]).split(dim, dim=-1)  # (P, Dv)
            own = F.scaled_dot_product_attention(q, k, val)
            extra = F.scaled_dot_product_attention(q, _heads(pk, heads, batch), _heads(pv, heads, batch))
            mixed = (own + torch.tanh(gate).to(x.dtype) * extra).transpose(1, 2).flatten(2)  # (B, L, Dv)
            x = x + block.ls_1(attn.out_proj(mixed))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return self._project(x)

    # ---- preprocessing ----------------------------------------------------------------------
    def preprocess_cfg_key(self) -> str:
        return json.dumps(self.preprocess_cfg, sort_keys=True, default=str)


def _heads(t: torch.Tensor, heads: int, batch: int) -> torch.Tensor:
    """(B, N, D) or (N, D) -> (B, H, N, D/H), the layout scaled_dot_product_attention takes."""
    t = t.unflatten(-1, (heads, t.shape[-1] // heads)).transpose(-3, -2)
    return t.expand(batch, -1, -1, -1)


class Preprocess:
    """A PIL image or a (3, h, w) tensor (float in [0, 1] or uint8) -> the model's (3, H, W) input.

    A plain picklable object, so image-loading workers get it without the model.
    """

    def __init__(self, cfg: dict):
        self.cfg = cfg
        size = cfg["size"]
        self.size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        self._transform = None

    def __call__(self, image) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            x = image.unsqueeze(0)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            if tuple(x.shape[-2:]) != self.size:
                x = F.interpolate(x, size=self.size, mode="bicubic", align_corners=False, antialias=True)
            mean = torch.tensor(self.cfg["mean"]).view(1, 3, 1, 1)
            std = torch.tensor(self.cfg["std"]).view(1, 3, 1, 1)
            return ((x.clamp(0, 1) - mean) / std)[0]
        if self._transform is None:
            from open_clip.transform import PreprocessCfg, image_transform_v2

            self._transform = image_transform_v2(PreprocessCfg(**self.cfg), is_train=False)
        return self._transform(image)


@contextlib.contextmanager
def _quiet_root_logger(quiet: bool):
    """open_clip warns on the root logger that a weightless model is random: for the shipped
    test config that is the intent, not news."""
    root = logging.getLogger()
    level = root.level
    if quiet:
        root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
