"""Data: the seeded K-shot sampler, the image-folder and torchvision adapters, and their errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.data import few_shot, resolve_task
from pipeline.data.sampler import val_shots
from pipeline.data.sources import ImageFolderSource
from pipeline.errors import MvlptError
from tests.toy_data import write_folder

LABELS = np.repeat(np.arange(4), 30)  # 4 classes x 30 images
NAMES = ["a", "b", "c", "d"]


def test_same_seed_same_sample_on_any_machine():
    s = few_shot(LABELS, NAMES, 5, seed=0, task="t")
    # golden values: PCG64 with SeedSequence([seed, crc32(task)]) is platform-independent
    assert s.train.tolist() == few_shot(LABELS, NAMES, 5, seed=0, task="t").train.tolist()
    assert s.train.tolist() == GOLDEN_TRAIN_SEED0
    assert s.val.tolist() == GOLDEN_VAL_SEED0
    assert few_shot(LABELS, NAMES, 5, seed=1, task="t").train.tolist() != s.train.tolist()
    assert few_shot(LABELS, NAMES, 5, seed=0, task="u").train.tolist() != s.train.tolist()


# 5 shots of each of 4 classes, drawn as [23, 1, 9, 13, 7], [35, 30, 42, 55, 44], ...: the first
# shot of each class validates, the other four train.
GOLDEN_TRAIN_SEED0 = [1, 9, 13, 7, 30, 42, 55, 44, 86, 68, 70, 73, 106, 90, 96, 101]
GOLDEN_VAL_SEED0 = [23, 35, 62, 94]


@pytest.mark.parametrize("shots", [2, 5, 20])
def test_validation_shots_are_held_out_of_training(shots):
    s = few_shot(LABELS, NAMES, shots, seed=3, task="t")
    n_val = math.ceil(0.2 * shots)
    assert n_val == val_shots(shots)
    assert len(s.val) == 4 * n_val and len(s.train) == 4 * (shots - n_val)
    assert not set(s.val.tolist()) & set(s.train.tolist())
    for c in range(4):
        assert set(LABELS[s.val[c * n_val : (c + 1) * n_val]]) == {c}
        assert set(LABELS[s.train[c * (shots - n_val) : (c + 1) * (shots - n_val)]]) == {c}
    # the held-out shots are the first of each class's draw: more shots only add training images
    more = few_shot(LABELS, NAMES, shots + 5, seed=3, task="t")
    assert len(more.val) >= len(s.val)


def test_one_shot_validates_on_the_training_image():
    s = few_shot(LABELS, NAMES, 1, seed=3, task="t")
    assert val_shots(1) == 0
    assert len(s.train) == 4 and s.val.tolist() == s.train.tolist()


def test_multilabel_sampler_covers_every_class():
    rng = np.random.Generator(np.random.PCG64(0))
    multi = (rng.random((60, 5)) < 0.3).astype(np.float32)
    multi[np.arange(60), np.arange(60) % 5] = 1
    s = few_shot(multi, list("abcde"), 3, seed=0, task="m")
    assert len(set(s.train.tolist())) == len(s.train)
    assert not set(s.val.tolist()) & set(s.train.tolist())
    for c in range(5):
        assert multi[s.train, c].sum() >= 2 and multi[s.val, c].sum() >= 1


def test_too_many_shots_and_empty_classes_are_named():
    uneven = np.concatenate([LABELS[LABELS != 1], np.ones(12, dtype=int)])
    assert len(few_shot(uneven, NAMES, 12, seed=0, task="t").train) == 4 * (12 - 3)
    with pytest.raises(
        MvlptError, match="task 't': 13 shots asked but class 'b' has only 12 training images"
    ):
        few_shot(uneven, NAMES, 13, seed=0, task="t")
    with pytest.raises(MvlptError, match="class 'e' has no training images"):
        few_shot(LABELS, NAMES + ["e"], 2, seed=0, task="t")


def test_image_folder_task(tmp_path):
    root = write_folder(tmp_path / "birds", classes=("crow", "jay"), n_train=3, n_test=2)
    task = resolve_task(str(root))
    assert task.classnames == ("crow", "jay") and task.metric == "accuracy"
    assert task.data.labels("train").tolist() == [0, 0, 0, 1, 1, 1]
    assert task.data.image("test", 3).size == (48, 40)
    assert task.identity.startswith("folder:birds@")


def test_image_folder_errors(tmp_path):
    with pytest.raises(MvlptError, match="dataset root not found"):
        ImageFolderSource(tmp_path / "missing", "x")
    root = write_folder(tmp_path / "f", classes=("a", "b"))
    (root / "test" / "b").joinpath("0.png").unlink()
    for p in (root / "test" / "b").iterdir():
        p.unlink()
    with pytest.raises(MvlptError, match=r"class 'b' has no images in .*test/b"):
        ImageFolderSource(root, "f")
    root2 = write_folder(tmp_path / "g", classes=("a", "b"))
    (root2 / "train" / "a" / "1.png").write_bytes(b"not a png")
    src = ImageFolderSource(root2, "g")
    with pytest.raises(MvlptError, match=r"corrupt image file: .*1\.png"):
        src.image("train", 1)


def test_multilabel_image_folder(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        d = tmp_path / "voc" / split
        d.mkdir(parents=True)
        rows = ["file,labels"]
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"{i}.png")
            rows.append(f"{i}.png,{'cat;dog' if i % 2 else 'dog'}")
        (d / "labels.csv").write_text("\n".join(rows) + "\n")
    task = resolve_task(str(tmp_path / "voc"))
    assert task.multilabel and task.metric == "map11" and task.classnames == ("cat", "dog")
    assert task.data.labels("train").tolist() == [[0, 1], [1, 1], [0, 1], [1, 1]]


def _write_idx(path, array: np.ndarray, kind: int):
    header = bytes([0, 0, kind, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_adapter_reads_local_files(tmp_path, monkeypatch):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.Generator(np.random.PCG64(0))
    for prefix, n in (("train", 30), ("t10k", 20)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)), 8)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 8)
    monkeypatch.setenv("MVLPT_DATA", str(tmp_path))
    task = resolve_task("mnist")
    assert task.classnames[:3] == ("zero", "one", "two")
    assert task.data.labels("test").tolist() == (np.arange(20) % 10).tolist()
    assert task.data.image("train", 0).mode == "RGB"


def test_registry_task_without_data_names_the_missing_path(tmp_path, monkeypatch):
    monkeypatch.setenv("MVLPT_DATA", str(tmp_path))
    with pytest.raises(MvlptError, match=f"task 'cifar-10': dataset root not found: {tmp_path}/cifar-10"):
        resolve_task("cifar-10")
    (tmp_path / "cifar-10").mkdir()
    with pytest.raises(MvlptError, match="torchvision CIFAR10 not found under"):
        resolve_task("cifar-10")
    with pytest.raises(MvlptError, match=f"task 'gtsrb': dataset root not found: {tmp_path}/gtsrb"):
        resolve_task("gtsrb")
    with pytest.raises(MvlptError, match="unknown task 'imagenet-9000'"):
        resolve_task("imagenet-9000")
