"""Every cell id of the shipped grids is pinned: a refactor that changes one changes what every
stored result means (old study folders would silently stop counting as done), so such a change
must be deliberate and show up here."""

from __future__ import annotations

import hashlib
import os

import pytest

from pipeline.cell import cell_id
from study.grid import expand
from study.launch import resolve_spec_path
from study.spec import load_spec

# sha256 over the sorted ids of each pairwise grid (the default one with the tests' 20-step pre-training
# recipe, the elevater one on the fixed data tree below); its cell count beside it
PINNED = {
    "default": (2540, "947662f634c75de9"),
    "elevater": (7400, "223b435658dd5b53"),  # zero-shot cells name the toolkit's templates of their task
}


def _elevater_tree(root) -> None:
    """Two classes, one image each, per split and task, with fixed names, bytes and times: the
    data fingerprint (file list, sizes, modification times) is the same on every run."""
    from pipeline.data.tasks import ELEVATER

    for task, (metric, _) in ELEVATER.items():
        for split in ("train", "test"):
            files = []
            for cls in ("one", "two"):
                files.append(root / task / split / cls / "0.png")
            if metric == "map11":  # multi-label: the labels live in labels.csv
                (root / task / split / "labels.csv").parent.mkdir(parents=True)
                (root / task / split / "labels.csv").write_text(
                    "file,labels\none/0.png,one;two\ntwo/0.png,two\n"
                )
                _fix_time(root / task / split / "labels.csv")
            for image in files:
                image.parent.mkdir(parents=True)
                image.write_bytes(_PNG)
                _fix_time(image)


def _fix_time(path) -> None:
    os.utime(path, ns=(1_700_000_000_000_000_000, 1_700_000_000_000_000_000))


# a 1x1 grey PNG
_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010800000000"
    "3a7e9b550000000a49444154789c6360000000020001e221bc330000000049454e44ae426082"
)


def _digest(spec_name: str) -> tuple[int, str]:
    # the pairwise grid; the cells of the later stages are chosen from its results
    grid = ("zeroshot", "single", "transfer")
    cells = [c for c in expand(load_spec(resolve_spec_path(spec_name))).cells if c.stage in grid]
    ids = sorted(cell_id(c) for c in cells)
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]


@pytest.mark.parametrize("spec_name", sorted(PINNED))
def test_every_cell_id_of_the_shipped_grids_is_pinned(spec_name, tmp_path, monkeypatch):
    if spec_name == "elevater":
        _elevater_tree(tmp_path)
        monkeypatch.setenv("MVLPT_DATA", str(tmp_path))
    assert _digest(spec_name) == PINNED[spec_name]
