"""Methods: class-agnostic prompt states that move between label spaces, seeds and files."""

from __future__ import annotations

import pytest
import torch

from pipeline.cell import make_cell
from pipeline.errors import MvlptError
from pipeline.loop import TrainSet, Validation, train
from pipeline.methods import (
    METHODS,
    average_states,
    build_method,
    load_state,
    method_config,
    save_state,
)
from pipeline.recipe import Recipe
from pipeline.run import run

FIVE = ["red square", "green disc", "blue bar", "grey ring", "pink star"]
THREE = ["apple", "boat", "cloud"]


def _inputs(method, tiny, n):
    images = torch.rand(n, 3, 32, 32)
    return tiny.encode_image(images) if method.input_kind == "features" else images


@pytest.mark.parametrize("name", ["coop", "vpt", "upt"])
def test_prompt_tuned_on_five_classes_loads_into_three_and_tunes_on(name, tiny, toy_tasks):
    recipe = Recipe(epochs=3, lr=0.05, warmup_epochs=0)
    source = run(make_cell(name, "toy-five", recipe=recipe))
    state = source.prompt_state
    assert state["method"] == name
    # tuned away from its initialisation, and no class buffers: a method built for three classes
    # holds tensors of the very same names and shapes
    torch.manual_seed(0)  # as run() builds it
    untuned = build_method(name, tiny, FIVE, seed=0).prompt_state()["tensors"]
    assert any(not torch.equal(v, untuned[k]) for k, v in state["tensors"].items())
    fresh = build_method(name, tiny, THREE, seed=7).prompt_state()["tensors"]
    assert {k: v.shape for k, v in state["tensors"].items()} == {k: v.shape for k, v in fresh.items()}

    target = build_method(name, tiny, THREE, seed=7)
    target.load_prompt_state(state)
    for key, value in target.prompt_state()["tensors"].items():
        assert torch.equal(value, state["tensors"][key])

    x = _inputs(target, tiny, 6)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    out = train(
        target, TrainSet.single(x, y, 3), Validation(x, y.numpy(), slice(0, 3), "accuracy"), recipe, seed=0
    )
    assert out.epochs_run == 3
    now = target.prompt_state()["tensors"]
    assert any(not torch.equal(now[k], state["tensors"][k]) for k in state["tensors"])  # it tuned on
    assert target.logits(x).shape == (6, 3)
    # and through run(): an init-mode transfer cell from the 5-class task to the 3-class one
    cell = run(
        make_cell(name, "toy-three", source="toy-five", mode="init", recipe=recipe),
        source_state=state,
    )
    assert cell.n_test == 18 and 0.0 <= cell.value <= 1.0


@pytest.mark.parametrize("name", ["coop", "vpt", "upt"])
def test_a_state_from_another_method_is_refused(name, tiny):
    method = build_method(name, tiny, THREE)
    other = "vpt" if name != "vpt" else "coop"
    with pytest.raises(MvlptError, match=f"prompt state from method '{other}' cannot load into '{name}'"):
        method.load_prompt_state(build_method(other, tiny, THREE).prompt_state())


def test_a_state_with_wrong_shapes_is_refused(tiny):
    small = build_method("coop", tiny, THREE, {"n_ctx": 4})
    big = build_method("coop", tiny, THREE, {"n_ctx": 8})
    with pytest.raises(MvlptError, match=r"coop prompt state 'ctx' has shape \(4, 64\), expected \(8, 64\)"):
        big.load_prompt_state(small.prompt_state())


def test_states_average_over_seeds_and_survive_a_file(tmp_path, tiny):
    states = [build_method("vpt", tiny, THREE, seed=s).prompt_state() for s in (0, 1, 2)]
    assert not torch.equal(states[0]["tensors"]["tokens"], states[1]["tensors"]["tokens"])
    mean = average_states(states)
    expected = (
        states[0]["tensors"]["tokens"] + states[1]["tensors"]["tokens"] + states[2]["tensors"]["tokens"]
    ) / 3
    assert torch.allclose(mean["tensors"]["tokens"], expected)
    save_state(mean, tmp_path / "p.pt")
    assert torch.equal(load_state(tmp_path / "p.pt")["tensors"]["tokens"], mean["tensors"]["tokens"])
    with pytest.raises(MvlptError, match="cannot load into 'vpt'"):
        average_states([states[0], build_method("coop", tiny, THREE).prompt_state()])


def test_upt_tokens_attend_to_each_other_unless_reference_variant(tiny):
    images = torch.rand(2, 3, 32, 32)
    for variant, expect_change in (("attend", True), ("independent", False)):
        upt = build_method("upt", tiny, THREE, {"variant": variant}, seed=0)
        before_text, before_vis = (t.detach().clone() for t in upt._generate())
        with torch.no_grad():
            upt.tokens[-1] += 1.0  # perturb only the last visual token
        text, vis = upt._generate()
        assert torch.equal(vis[-1, :-1], before_vis[-1, :-1]) is not expect_change
        assert torch.equal(text, before_text) is not expect_change
        assert upt.logits(images).shape == (2, 3)


def test_class_specific_contexts_carry_over_by_class_name(tiny):
    src = build_method("coop", tiny, ["cat", "dog", "cow"], {"csc": True}, seed=0)
    dst = build_method("coop", tiny, ["dog", "bird"], {"csc": True}, seed=1)
    bird_before = dst.ctx[1].detach().clone()
    dst.load_prompt_state(src.prompt_state())
    assert torch.equal(dst.ctx[0], src.ctx[1])  # dog <- dog
    assert torch.equal(dst.ctx[1], bird_before)  # bird has no source: keeps its init
    shared = build_method("coop", tiny, THREE)
    with pytest.raises(MvlptError, match="class-specific"):
        shared.load_prompt_state(src.prompt_state())


def test_method_configs_reject_unknown_keys_and_bad_values():
    assert set(METHODS) == {"zeroshot", "coop", "vpt", "upt"}
    assert method_config("coop", {"n_ctx": 4}).n_ctx == 4
    with pytest.raises(MvlptError, match="coop config: unknown key 'nctx'"):
        method_config("coop", {"nctx": 4})
    with pytest.raises(MvlptError, match="vpt config 'n_tokens': bad value 'many'"):
        method_config("vpt", {"n_tokens": "many"})
    with pytest.raises(MvlptError, match="unknown method 'lora'"):
        method_config("lora", {})


@pytest.mark.parametrize(
    "name, config",
    [("vpt", {"n_tokens": 4, "gated": True}), ("upt", {"gated": True, "init": "a photo of a"})],
)
def test_gated_prompts_start_at_zero_shot_and_tune_away_from_it(name, config, tiny):
    images = torch.rand(6, 3, 32, 32)
    zero_shot = build_method("zeroshot", tiny, THREE)
    method = build_method(name, tiny, THREE, config, seed=3)

    def gap() -> float:
        with torch.no_grad():
            return (method.logits(images) - zero_shot.logits(tiny.encode_image(images))).abs().max().item()

    start = gap()
    assert start < 1e-4  # gates at zero (and UPT's text offset at zero): the zero-shot model
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    recipe = Recipe(epochs=3, lr=0.1, warmup_epochs=0)
    train(
        method,
        TrainSet.single(images, y, 3),
        Validation(images, y.numpy(), slice(0, 3), "accuracy"),
        recipe,
        seed=0,
    )
    state = method.prompt_state()["tensors"]
    assert state["gates"].abs().min() > 0  # every layer's gate opened
    assert gap() > 10 * max(start, 1e-5)  # and the prompts moved the model away from zero-shot
    again = build_method(name, tiny, ["dog", "cat"], config, seed=9)
    again.load_prompt_state(method.prompt_state())  # gates travel with the prompts
    assert torch.equal(again.prompt_state()["tensors"]["gates"], state["gates"])


def test_gated_image_prompts_are_deep_prompts(tiny):
    with pytest.raises(MvlptError, match="vpt: gated prompts are deep prompts"):
        build_method("vpt", tiny, THREE, {"gated": True, "deep": False})
    with pytest.raises(MvlptError, match="one prompt and one gate per layer"):
        tiny.encode_image(torch.rand(1, 3, 32, 32), [torch.zeros(2, tiny.vision_width)], torch.zeros(1))
