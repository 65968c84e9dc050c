"""Prompt methods behind one Protocol, registered in one literal dict."""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Iterator, Mapping
from typing import Protocol

import torch

from pipeline.errors import MvlptError
from pipeline.methods.coop import CoOp, CoOpConfig
from pipeline.methods.state import average_states, load_state, save_state
from pipeline.methods.upt import UPT, UPTConfig
from pipeline.methods.vpt import VPT, VPTConfig
from pipeline.methods.zeroshot import ZeroShot, ZeroShotConfig


class PromptMethod(Protocol):
    """What the loop needs of a method. `input_kind` says whether logits() takes cached image
    features ("features") or pixels ("pixels")."""

    name: str
    input_kind: str

    def parameters(self) -> Iterator[torch.nn.Parameter]: ...

    def logits(self, batch: torch.Tensor, classes: slice | None = None) -> torch.Tensor: ...

    def class_features(self, classes: slice | None = None) -> torch.Tensor: ...

    def image_features(self, batch: torch.Tensor) -> torch.Tensor: ...

    def prompt_state(self) -> dict: ...

    def load_prompt_state(self, state: dict) -> None: ...


# name -> (config schema, implementation)
METHODS = {
    "zeroshot": (ZeroShotConfig, ZeroShot),
    "coop": (CoOpConfig, CoOp),
    "vpt": (VPTConfig, VPT),
    "upt": (UPTConfig, UPT),
}
# the methods a study tunes ([methods.NAME] in a spec); zero-shot is the study's own stage
TUNED_METHODS = tuple(name for name in METHODS if name != "zeroshot")


def _check_method(name: str) -> None:
    if name not in METHODS:
        raise MvlptError(f"unknown method '{name}' (known: {', '.join(METHODS)})")


def _coerce(value, annotation, key: str, method: str):
    """Check one config value against its annotation (bool/int/float/str, optionally None)."""
    allowed = typing.get_args(annotation) or (annotation,)
    if value is None and type(None) in allowed:
        return None
    for t in (bool, int, float, str):
        if t in allowed or t.__name__ in allowed:
            if t is bool and isinstance(value, bool):
                return value
            if t is int and isinstance(value, int) and not isinstance(value, bool):
                return value
            if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if t is str and isinstance(value, str):
                return value
    raise MvlptError(f"{method} config '{key}': bad value {value!r} (expected {annotation})")


@functools.cache
def _hints(schema: type) -> dict:
    """A config schema's field types, resolved once (each cell's identity asks for its config)."""
    return typing.get_type_hints(schema)


def method_config(name: str, values: Mapping | None = None):
    """A method's frozen config from plain values; an unknown key or a bad value is named."""
    _check_method(name)
    schema = METHODS[name][0]
    fields = {f.name: f for f in dataclasses.fields(schema)}
    hints = _hints(schema)
    clean = {}
    for key, value in (values or {}).items():
        if key not in fields:
            raise MvlptError(f"{name} config: unknown key '{key}' (known: {', '.join(fields) or 'none'})")
        clean[key] = _coerce(value, hints[key], key, name)
    return schema(**clean)


def build_method(name: str, backbone, classnames, config=None, seed: int = 0) -> PromptMethod:
    """The method `name` for these classes, its prompt initialised from `seed`."""
    _check_method(name)
    impl = METHODS[name][1]
    if config is None or isinstance(config, Mapping):
        config = method_config(name, config)
    generator = torch.Generator().manual_seed(seed)
    return impl(backbone, list(classnames), config, generator)


__all__ = [
    "METHODS",
    "TUNED_METHODS",
    "PromptMethod",
    "average_states",
    "build_method",
    "load_state",
    "method_config",
    "save_state",
]
