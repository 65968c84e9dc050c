"""Prompt states: class-agnostic dicts of tensors that move between tasks, seeds and files."""

from __future__ import annotations

import os

import torch

from pipeline.errors import MvlptError

STATE_VERSION = 1


def make_state(method: str, tensors: dict[str, torch.Tensor]) -> dict:
    return {
        "method": method,
        "version": STATE_VERSION,
        "tensors": {k: v.detach().float().cpu().clone() for k, v in tensors.items()},
    }


def check_state(state, method: str, expected: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """The state's tensors, after checking it belongs to `method` and every shape matches."""
    if not isinstance(state, dict) or "tensors" not in state or "method" not in state:
        raise MvlptError("not a prompt state (expected a dict with 'method' and 'tensors')")
    if state["method"] != method:
        raise MvlptError(f"prompt state from method '{state['method']}' cannot load into '{method}'")
    tensors = state["tensors"]
    if set(tensors) != set(expected):
        raise MvlptError(f"{method} prompt state holds {sorted(tensors)}, expected {sorted(expected)}")
    for key, shape in expected.items():
        if tuple(tensors[key].shape) != tuple(shape):
            raise MvlptError(
                f"{method} prompt state '{key}' has shape {tuple(tensors[key].shape)}, "
                f"expected {tuple(shape)}"
            )
    return tensors


def load_parameters(module: torch.nn.Module, state, method: str) -> None:
    """Copy a state into the module's own parameters, after checking it holds exactly them."""
    own = dict(module.named_parameters())
    tensors = check_state(state, method, {k: v.shape for k, v in own.items()})
    with torch.no_grad():
        for key, param in own.items():
            param.copy_(tensors[key])


def average_states(states: list[dict]) -> dict:
    """The element-wise mean of prompt states of one method (e.g. over seeds)."""
    if not states:
        raise MvlptError("no prompt states to average")
    first = states[0]
    shapes = {k: v.shape for k, v in first["tensors"].items()}
    for s in states[1:]:
        check_state(s, first["method"], shapes)
    mean = {k: torch.stack([s["tensors"][k] for s in states]).mean(0) for k in shapes}
    return make_state(first["method"], mean)


def save_state(state: dict, path: str | os.PathLike) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: str | os.PathLike) -> dict:
    if not os.path.isfile(path):
        raise MvlptError(f"prompt state file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a torn or foreign file: name it
        raise MvlptError(f"not a readable prompt state file: {path} ({type(err).__name__})") from err
