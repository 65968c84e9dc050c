"""The same id means the same result: a cell's identity follows its data, its weights and the
activation they were trained with, and the feature cache follows everything its numbers depend on."""

from __future__ import annotations

import shutil
import struct
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import pipeline.backbones as backbones
from pipeline.errors import MvlptError
from tests.pipeline.test_image_folders import _multilabel
from tests.toy_data import write_folder


@pytest.mark.parametrize("name", ["default", "elevater"])
def test_every_shipped_spec_builds_its_backbone_with_the_activation_its_weights_learned(name, monkeypatch):
    import open_clip

    from study.launch import resolve_spec_path
    from study.spec import load_spec

    spec = backbones.parse_backbone(load_spec(resolve_spec_path(name)).backbone)
    config = open_clip.get_model_config(spec.arch) or {}
    tag = (
        open_clip.get_pretrained_cfg(spec.arch, spec.weights)
        if spec.weights and not spec.weights_is_file
        else {}
    )
    trained_quick = bool((tag or {}).get("quick_gelu") or config.get("quick_gelu"))
    assert bool(backbones.effective_config(spec).get("quick_gelu")) == trained_quick
    if not tag:
        return  # weights made here with the config's own activation (the built-in backbone)
    # the tag's own download is replaced by a random init of the same build call, offline
    real = open_clip.create_model
    calls = []

    def create_model(arch, pretrained=None, **kw):
        calls.append((arch, pretrained, kw.get("force_quick_gelu")))
        return real(arch, pretrained=None, **kw)

    monkeypatch.setattr(open_clip, "create_model", create_model)
    monkeypatch.setattr(backbones, "_LOADED", {})
    backbone = backbones.load_backbone(spec.name)
    assert calls == [(spec.arch, spec.weights, trained_quick)]
    block = backbone.model.visual.transformer.resblocks[0]
    assert type(block.mlp.gelu).__name__ == ("QuickGELU" if trained_quick else "GELU")
    # and the identity says so: the plain config's would name another model
    monkeypatch.setattr(backbones, "trained_with_quick_gelu", lambda s: False)
    backbones._config_text.cache_clear()  # the config text is memoised per backbone
    try:
        assert backbones.backbone_identity(spec) != backbone.identity
    finally:
        backbones._config_text.cache_clear()


def test_an_elevater_folder_task_is_identified_by_its_data(tmp_path, monkeypatch):
    from pipeline.data import resolve_task

    identities = []
    for seed, root in enumerate((tmp_path / "one", tmp_path / "two")):
        write_folder(root / "eurosat", classes=("river", "forest"), seed=seed)
        monkeypatch.setenv("MVLPT_DATA", str(root))
        identities.append(resolve_task("eurosat").identity)
    assert identities[0] != identities[1] and all(i.startswith("eurosat@") for i in identities)


def test_a_multi_label_fingerprint_follows_labels_csv(tmp_path):
    from pipeline.data.sources import ImageFolderSource

    root = _multilabel(tmp_path / "voc")
    before = ImageFolderSource(root, "voc").fingerprint()
    for split in ("train", "test"):  # the same files and classes, other labels
        csv = root / split / "labels.csv"
        csv.write_text(csv.read_text().replace("0.png,dog", "0.png,cat;dog"))
    assert ImageFolderSource(root, "voc").fingerprint() != before


def _idx(path: Path, array: np.ndarray) -> None:
    magic = (0x08 << 8) | array.ndim  # idx: type code 8 (unsigned byte), then the number of dimensions
    path.write_bytes(
        struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    )


def _fake_mnist(root: Path, value: int) -> None:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", 6), ("t10k", 4)):
        _idx(raw / f"{prefix}-images-idx3-ubyte", np.full((n, 28, 28), value, dtype=np.uint8))
        _idx(raw / f"{prefix}-labels-idx1-ubyte", (np.arange(n) % 10).astype(np.uint8))


def test_a_torchvision_fingerprint_follows_its_files(tmp_path):
    from pipeline.data.sources import TorchvisionSource

    _fake_mnist(tmp_path / "a", 10)
    _fake_mnist(tmp_path / "b", 200)  # the same names and lengths, other images
    a, b = TorchvisionSource("mnist", tmp_path / "a"), TorchvisionSource("mnist", tmp_path / "b")
    assert len(a.labels("train")) == len(b.labels("train")) == 6
    assert a.fingerprint() != b.fingerprint()


def test_the_feature_cache_key_names_device_dtype_and_library_versions(tiny, toy_tasks, monkeypatch):
    from pipeline.features import FeatureCache

    task = toy_tasks[0]
    key = FeatureCache.key(tiny, task, "train")
    like = dict(identity=tiny.identity, preprocess_cfg_key=tiny.preprocess_cfg_key)
    on_gpu = types.SimpleNamespace(**like, device=torch.device("cuda"), model=tiny.model)
    half = types.SimpleNamespace(**like, device=tiny.device, model=torch.nn.Linear(2, 2).half())
    assert FeatureCache.key(on_gpu, task, "train") != key
    assert FeatureCache.key(half, task, "train") != key
    monkeypatch.setattr("pipeline.features.library_versions", lambda: "torch 0.0|open_clip 0.0")
    assert FeatureCache.key(tiny, task, "train") != key


def test_a_cache_file_that_is_not_its_keys_table_is_rebuilt(tiny, toy_tasks, tmp_path):
    from pipeline.features import FeatureCache

    five, three = toy_tasks
    FeatureCache(tmp_path).features(tiny, five, "train", [0, 1])
    shutil.copy(
        tmp_path / f"{FeatureCache.key(tiny, five, 'train')}.pt",
        tmp_path / f"{FeatureCache.key(tiny, three, 'train')}.pt",
    )
    cache = FeatureCache(tmp_path)
    got = cache.features(tiny, three, "train", [0, 1])
    assert cache.images_encoded == 2
    assert torch.equal(got, FeatureCache().features(tiny, three, "train", [0, 1]))


def test_cache_writers_never_share_a_temporary_name(tiny, toy_tasks, tmp_path, monkeypatch):
    import os

    from pipeline.features import FeatureCache

    names = []
    real = os.replace

    def replace(src, dst):
        names.append(Path(src).name)
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    for _ in range(2):  # two writers with the same pid, as on two hosts sharing the folder
        FeatureCache(tmp_path).features(tiny, toy_tasks[1], "test", [len(names)])
    assert len(names) == 2 and names[0] != names[1]


def test_an_empty_mvlpt_cache_never_writes_into_the_working_folder(tmp_path, monkeypatch):
    from study.launch import feature_cache_dir

    monkeypatch.setenv("MVLPT_CACHE", "")
    monkeypatch.chdir(tmp_path)
    path = Path(feature_cache_dir())
    assert path.is_absolute() and tmp_path not in path.parents


def test_a_junk_builtin_checkpoint_is_one_line_with_its_path_and_the_fix(tmp_path, monkeypatch):
    from pipeline.pretrain import checkpoint_path

    monkeypatch.setenv("MVLPT_CACHE", str(tmp_path))
    monkeypatch.setattr(backbones, "_LOADED", {})
    path = checkpoint_path()
    path.write_bytes(b"this is not a checkpoint")
    with pytest.raises(MvlptError, match=f"cached built-in backbone {path} is damaged .*mvlpt pretrain"):
        backbones.load_backbone("builtin")
    torch.save({"visual.proj": torch.zeros(64, 32)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # a copy cut short
    with pytest.raises(MvlptError, match=f"cached built-in backbone {path} is damaged"):
        backbones.load_backbone("builtin")
