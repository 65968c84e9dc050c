"""Shared fixtures (small in-memory tasks, an image folder on disk, the tiny backbone) and the
test environment: a temporary cache and a short pre-training."""

from __future__ import annotations

import os
import tempfile

# Tests never read or write the user's cache, and pre-train the built-in backbone for a few steps
# only (the step count is part of its checkpoint key). Set before anything imports the kernel.
os.environ["MVLPT_CACHE"] = tempfile.mkdtemp(prefix="mvlpt-test-cache-")
os.environ["MVLPT_PRETRAIN_STEPS"] = "20"
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from tests.toy_data import colour_task, write_folder  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """The slow end-to-end tests first: with two test processes, the longest one starts at once
    instead of after everything else, and the rest runs beside it."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def toy_tasks():
    """Two tasks with different label spaces: 5 classes and 3 classes."""
    five = colour_task("toy-five", ["red square", "green disc", "blue bar", "grey ring", "pink star"], seed=1)
    three = colour_task("toy-three", ["apple", "boat", "cloud"], seed=2)
    colour_task("toy-multi", ["sun", "moon", "star"], multilabel=True, seed=4)
    return five, three


@pytest.fixture(scope="session")
def tiny():
    from pipeline.backbones import load_backbone

    return load_backbone("tiny")


@pytest.fixture
def image_folder(tmp_path):
    return write_folder(tmp_path / "pets")
