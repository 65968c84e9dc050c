"""Image folders as users hand them over: deep PNGs, hidden entries, odd labels.csv files, huge images."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.sources import ImageFolderSource
from pipeline.errors import MvlptError
from tests.toy_data import write_folder


def test_a_16_bit_png_is_scaled_not_clipped_to_white(tmp_path):
    from PIL import Image

    root = write_folder(tmp_path / "f", classes=("a", "b"))
    grey = np.full((8, 8), 30000, dtype=np.uint16)  # 46% of full scale
    Image.fromarray(grey).save(root / "train" / "a" / "9.png")
    assert Image.open(root / "train" / "a" / "9.png").mode.startswith("I")
    src = ImageFolderSource(root, "f")
    index = [i for i, f in enumerate(src._files["train"]) if f.endswith("9.png")][0]
    pixels = np.asarray(src.image("train", index))
    assert pixels.shape == (8, 8, 3) and np.all(pixels == round(30000 * 255 / 65535))


def test_hidden_entries_are_ignored(tmp_path):
    root = write_folder(tmp_path / "f", classes=("a", "b"))
    for split in ("train", "test"):
        (root / split / ".ipynb_checkpoints").mkdir()
        (root / split / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07 resource fork")
    src = ImageFolderSource(root, "f")
    assert src.classnames == ("a", "b")
    assert not [f for f in src._files["train"] + src._files["test"] if "/." in f]


def test_a_class_only_in_test_and_a_one_class_task_are_one_line(tmp_path):
    root = write_folder(tmp_path / "f", classes=("a", "b"))
    write_folder(tmp_path / "extra", classes=("c",))
    (tmp_path / "extra" / "test" / "c").rename(root / "test" / "c")
    with pytest.raises(MvlptError, match=r"class 'c' is in .*test but not in .*train"):
        ImageFolderSource(root, "f")
    one = write_folder(tmp_path / "one", classes=("a",))
    with pytest.raises(MvlptError, match="has one class \\('a'\\); a task needs at least 2"):
        ImageFolderSource(one, "one")


def _multilabel(root, header: str = "file,labels", bom: bool = False, missing: bool = False):
    from PIL import Image

    for split in ("train", "test"):
        d = root / split
        d.mkdir(parents=True)
        rows = [header]
        for i in range(4):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(d / f"{i}.png")
            rows.append(f"{i}.png,{'cat;dog' if i % 2 else 'dog'}")
        if missing and split == "test":
            rows.append("gone.png,cat")
        (d / "labels.csv").write_text(("\ufeff" if bom else "") + "\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_labels_csv_with_a_byte_order_mark_or_naming_a_missing_file(tmp_path):
    src = ImageFolderSource(_multilabel(tmp_path / "bom", bom=True), "bom")
    assert src.classnames == ("cat", "dog") and len(src.labels("train")) == 4
    with pytest.raises(MvlptError, match="test/labels.csv names a missing file 'gone.png'"):
        ImageFolderSource(_multilabel(tmp_path / "gone", missing=True), "gone")


def test_an_image_over_the_decompression_bomb_limit_is_one_line(tmp_path, monkeypatch):
    from PIL import Image

    root = write_folder(tmp_path / "f", classes=("a", "b"))
    src = ImageFolderSource(root, "f")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # the 48 x 40 test images are over twice that
    with pytest.raises(
        MvlptError, match=r"image too large: .*0\.png \(over Pillow's decompression-bomb limit"
    ):
        src.image("train", 0)
