"""The backbone: prompt-free parity with open_clip, and the three ways of loading weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from pipeline.backbones import load_backbone, parse_backbone
from pipeline.errors import MvlptError
from pipeline.methods import build_method


def test_prompt_free_encoders_equal_open_clip_exactly(tiny):
    torch.manual_seed(0)
    images = torch.randn(5, 3, 32, 32)
    tokens = tiny.tokenize(["a photo of a cat.", "a dog", "red", "x " * 10, ""])
    assert torch.equal(tiny.encode_image(images), tiny.model.encode_image(images))
    assert torch.equal(tiny.encode_text(tokens), tiny.model.encode_text(tokens))


def test_coop_from_template_words_reproduces_zero_shot_logits(tiny):
    classes = ["cat", "sports car", "red panda", "x"]
    zs = build_method("zeroshot", tiny, classes)
    coop = build_method("coop", tiny, classes, {"init": "a photo of a", "position": "end"})
    assert coop.ctx.shape == (4, tiny.text_width)
    feats = tiny.encode_image(torch.randn(6, 3, 32, 32))
    with torch.no_grad():
        diff = (zs.logits(feats) - coop.logits(feats)).abs().max().item()
    assert diff <= 1e-5
    # the parity is not vacuous: a different context moves the logits
    coop.ctx.data.add_(0.5 * torch.randn_like(coop.ctx))  # (a constant shift would vanish in LayerNorm)
    with torch.no_grad():
        assert (zs.logits(feats) - coop.logits(feats)).abs().max().item() > 1e-3


def test_visual_prompts_change_the_image_features(tiny):
    images = torch.randn(2, 3, 32, 32)
    prompts = [torch.randn(4, tiny.vision_width) for _ in range(tiny.vision_layers)]
    assert not torch.allclose(tiny.encode_image(images), tiny.encode_image(images, prompts))
    # deep prompts matter beyond the first layer
    shallow = tiny.encode_image(images, prompts[:1])
    assert not torch.allclose(shallow, tiny.encode_image(images, prompts))


def test_local_checkpoint_path_loads_its_weights(tmp_path, tiny):
    state = {k: v + 0.01 for k, v in tiny.model.state_dict().items()}
    ckpt = tmp_path / "tiny-ckpt.pt"
    torch.save(state, ckpt)
    loaded = load_backbone(f"tiny:{ckpt}")
    assert torch.equal(loaded.model.visual.proj, state["visual.proj"])
    assert loaded.identity != tiny.identity
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.encode_image(images), loaded.model.encode_image(images))


def test_pretrained_tag_resolves_through_open_clip_cache(tmp_path):
    """ARCH:TAG takes open_clip's download path; here the hub cache already holds the file."""
    import open_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = open_clip.create_model("ViT-B-32-quickgelu")
    repo = tmp_path / "hub" / "models--timm--vit_base_patch32_clip_224.openai"
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    torch.save({k: v.half() for k, v in model.state_dict().items()}, snap / "open_clip_pytorch_model.bin")
    expected = model.visual.proj.half().float()[:2, :3].tolist()
    del model
    script = textwrap.dedent(
        """
        import json, sys
        from pipeline.backbones import load_backbone
        bb = load_backbone("ViT-B-32-quickgelu:openai")
        print(json.dumps([bb.identity, bb.model.visual.proj[:2, :3].tolist()]))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    import json

    identity, proj = json.loads(out.stdout.strip().splitlines()[-1])
    assert identity.startswith("ViT-B-32-quickgelu@")
    assert torch.allclose(torch.tensor(proj), torch.tensor(expected))


@pytest.mark.parametrize(
    "name, message",
    [
        ("nope", "unknown backbone 'nope'"),
        ("ViT-B-16", "names no weights"),
        ("ViT-B-16:not-a-tag", "unknown pretrained tag 'not-a-tag'"),
        ("tiny:/no/such/file.pt", "checkpoint file not found: /no/such/file.pt"),
    ],
)
def test_bad_backbone_names_fail_in_one_line(name, message):
    with pytest.raises(MvlptError, match=message.replace("(", r"\(")) as err:
        parse_backbone(name)
    assert "\n" not in str(err.value)
