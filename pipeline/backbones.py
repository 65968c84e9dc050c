"""Backbone names: what a name like 'tiny', 'builtin' or 'ViT-B-16:openai' means, its identity, and
loading it once per process (open_clip itself is reached through pipeline.clip only)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass

import torch

from pipeline import clip
from pipeline.clip import Backbone
from pipeline.errors import MvlptError, first_line
from pipeline.pretrain import ARCH as BUILTIN_ARCH
from pipeline.pretrain import checkpoint_key, pretrained_checkpoint

log = logging.getLogger(__name__)

# Backbones shipped with the project: short name -> open_clip model config in pipeline/configs/.
# "tiny" has no weights: it is built with a fixed seed (the test model, timm-style). It keeps CLIP's
# proportions at toy size: the image tower (65 tokens, width 128) costs more than the text tower
# (width 64), as ViT-B/16's 197 tokens at width 768 do against its text.
# "builtin" is pre-trained on the built-in suite the first time it is needed (pipeline.pretrain).
SHIPPED = {
    "tiny": "mvlpt-tiny",
    "builtin": BUILTIN_ARCH,
}
PRETRAINED_SHIPPED = ("builtin",)


def file_sha256(path: str | os.PathLike, _memo: dict = {}) -> str:  # noqa: B006 - process memo
    """Content hash of a file, memoised on (path, size, mtime) so big checkpoints hash once."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _memo[key] = h.hexdigest()
    return _memo[key]


@dataclass(frozen=True)
class BackboneSpec:
    """`name` as the user wrote it, resolved to an open_clip architecture and a weights source."""

    name: str
    arch: str  # an open_clip model name (shipped configs are registered under their own names)
    weights: str | None  # None (shipped random init), a pretrained tag, or a checkpoint path
    weights_is_file: bool
    pretrained_here: bool = False  # weights come from pipeline.pretrain's cached checkpoint


@functools.cache
def parse_backbone(name: str) -> BackboneSpec:
    """Resolve 'tiny', 'tiny:PATH', 'ARCH:TAG' or 'ARCH:PATH' (open_clip names), or fail in one line.
    Memoised per name: planning asks for every cell's backbone, thousands of times per study."""
    arch, _, weights = name.partition(":")
    weights = weights or None
    shipped = arch in SHIPPED
    arch_name = SHIPPED.get(arch, arch).replace("/", "-")
    if not clip.known_architecture(arch_name):
        raise MvlptError(
            f"unknown backbone '{name}': expected one of {sorted(SHIPPED)} or ARCH:TAG / ARCH:PATH "
            f"with ARCH an open_clip model (e.g. ViT-B-16:openai)"
        )
    if weights is None and arch in PRETRAINED_SHIPPED:
        return BackboneSpec(name, arch_name, None, False, pretrained_here=True)
    if weights is None:
        if not shipped:
            raise MvlptError(
                f"backbone '{name}' names no weights: use {arch}:TAG (e.g. openai) or {arch}:PATH"
            )
        return BackboneSpec(name, arch_name, None, False)
    is_file = os.path.sep in weights or weights.endswith((".pt", ".bin", ".pth", ".safetensors"))
    if is_file:
        if not os.path.isfile(weights):
            raise MvlptError(f"backbone '{name}': checkpoint file not found: {weights}")
        return BackboneSpec(name, arch_name, os.path.abspath(weights), True)
    if not clip.pretrained_tag(arch_name, weights):
        tags = clip.pretrained_tags(arch_name)
        raise MvlptError(f"backbone '{name}': unknown pretrained tag '{weights}' (known: {tags})")
    return BackboneSpec(name, arch_name, weights, False)


def trained_with_quick_gelu(spec: BackboneSpec) -> bool:
    """Whether a pretrained tag's weights were trained with QuickGELU while the architecture's config
    says GELU (OpenAI's weights under the plain `ViT-B-16` config): such a model must be built with
    QuickGELU, or it computes other features than the ones its weights were trained for."""
    if spec.weights is None or spec.weights_is_file:
        return False
    tag = clip.pretrained_tag(spec.arch, spec.weights)
    return bool(tag.get("quick_gelu")) and not clip.architecture_config(spec.arch).get("quick_gelu")


def effective_config(spec: BackboneSpec) -> dict:
    """The open_clip config the backbone is built from, with the activation its weights need."""
    cfg = clip.architecture_config(spec.arch)
    if trained_with_quick_gelu(spec):
        cfg["quick_gelu"] = True
    return cfg


@functools.lru_cache(maxsize=64)
def _config_text(spec: BackboneSpec) -> str:
    """The effective config as canonical JSON, once per backbone (open_clip copies it on every ask)."""
    return json.dumps(effective_config(spec), sort_keys=True)


def backbone_identity(spec: BackboneSpec) -> str:
    """What determines the backbone's weights: effective config (activation included) plus the tag
    or the file's hash."""
    cfg = _config_text(spec)
    if spec.pretrained_here:
        source = "pretrain:" + checkpoint_key()  # no training needed to know the identity
    elif spec.weights is None:
        source = "seed0"
    elif spec.weights_is_file:
        source = "sha256:" + file_sha256(spec.weights)
    else:
        source = "tag:" + spec.weights
    digest = hashlib.sha256(f"{cfg}|{source}".encode()).hexdigest()[:16]
    return f"{spec.arch}@{digest}"


_LOADED: dict[tuple[str, str], Backbone] = {}


def load_backbone(name: str, device: str | torch.device = "cpu", cache_dir: str | None = None) -> Backbone:
    """Build (once per process and device) the frozen backbone named `name`."""
    spec = parse_backbone(name)
    device = torch.device(device)
    key = (name, str(device))
    if key in _LOADED:
        return _LOADED[key]
    identity = backbone_identity(spec)
    pretrained_here = spec.pretrained_here
    if spec.pretrained_here:
        spec = dataclasses.replace(spec, weights=str(pretrained_checkpoint()), weights_is_file=True)
    try:
        model, tokenizer = clip.create_frozen(
            spec.arch, spec.weights, cache_dir, trained_with_quick_gelu(spec)
        )
    except MvlptError:
        raise
    except Exception as err:  # a torn or foreign checkpoint raises from torch's unpickler, any type
        first = first_line(err)
        if pretrained_here:
            raise MvlptError(
                f"the cached built-in backbone {spec.weights} is damaged ({first}); "
                f"delete it and run `mvlpt pretrain` to rebuild it"
            ) from err
        raise MvlptError(f"could not load backbone '{name}': {first}") from err
    backbone = Backbone(model.to(device), tokenizer, name, identity, device)
    _LOADED[key] = backbone
    log.info("loaded backbone %s (%s) on %s", name, identity, device)
    return backbone
