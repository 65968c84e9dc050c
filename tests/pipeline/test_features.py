"""The feature cache: each image through the tower once per process, and reuse across processes."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.cell import make_cell
from pipeline.features import FeatureCache
from pipeline.recipe import Recipe
from pipeline.run import Context, run


def test_each_image_is_encoded_once_per_process(tiny, toy_tasks):
    five, _ = toy_tasks
    cache = FeatureCache()
    a = cache.features(tiny, five, "train", [0, 1, 2, 3])
    assert cache.images_encoded == 4
    b = cache.features(tiny, five, "train", [3, 2, 4, 4])
    assert cache.images_encoded == 5  # only image 4 was new
    assert torch.equal(b[:2], a[[3, 2]]) and torch.equal(b[2], b[3])
    direct = tiny.encode_image(torch.stack([tiny.preprocess(five.data.image("train", 4))]))
    assert torch.allclose(b[2], direct[0], atol=1e-5)
    # an image's cached features do not depend on what it was encoded with
    alone = FeatureCache().features(tiny, five, "train", [4])
    assert torch.equal(alone[0], b[2])
    cache.features(tiny, five, "test", [0])
    assert cache.images_encoded == 6  # another split is another table


def test_cells_share_the_cache(toy_tasks):
    context = Context(feature_cache=True)
    recipe = Recipe(epochs=1)
    run(make_cell("zeroshot", "toy-five"), context=context)
    after_zero_shot = context.cache().images_encoded
    assert after_zero_shot == 30  # the whole test split
    run(make_cell("coop", "toy-five", recipe=recipe, seed=0), context=context)
    run(make_cell("coop", "toy-five", recipe=recipe, seed=1), context=context)
    # two CoOp cells encoded only their training shots, never the test split again
    assert 0 < context.cache().images_encoded - after_zero_shot <= 40


def test_disk_cache_is_reused_by_a_fresh_cache(tmp_path, tiny, toy_tasks):
    five, _ = toy_tasks
    first = FeatureCache(tmp_path)
    a = first.features(tiny, five, "train", np.arange(10))
    second = FeatureCache(tmp_path)
    b = second.features(tiny, five, "train", np.arange(10))
    assert second.images_encoded == 0 and torch.equal(a, b)
    second.features(tiny, five, "train", [10, 11])
    assert second.images_encoded == 2
    third = FeatureCache(tmp_path)
    third.features(tiny, five, "train", np.arange(12))
    assert third.images_encoded == 0
    (tmp_path / f"{FeatureCache.key(tiny, five, 'train')}.pt").write_bytes(b"torn")
    fourth = FeatureCache(tmp_path)
    assert torch.equal(fourth.features(tiny, five, "train", [0]), a[:1])  # rebuilt, not trusted
    assert fourth.images_encoded == 1
