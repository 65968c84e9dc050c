"""The toolkit's class names and templates of the 20 ELEVATER tasks, and zero-shot's template ensemble."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.data import elevater
from pipeline.data.tasks import ELEVATER


def test_every_roster_task_has_the_toolkits_names_and_templates():
    for task, (_, n_classes) in ELEVATER.items():
        names, templates = elevater.classnames(task), elevater.templates(task)
        assert names is not None and len(names) == n_classes and len(set(names)) == n_classes, task
        assert templates and all("{}" in t for t in templates), task
    assert (
        elevater.toolkit_name("eurosat") == "eurosat_clip"
        and elevater.roster_name("eurosat_clip") == "eurosat"
    )
    assert elevater.toolkit_name("dtd") == "dtd" and elevater.classnames("no-such-task") is None


def test_zero_shot_averages_a_tasks_templates(tiny):
    from pipeline.methods import build_method
    from pipeline.methods.text import template_features

    names, templates = ["red", "blue"], ("a photo of a {}.", "a drawing of the {}.")
    method = build_method("zeroshot", tiny, names)
    single = method.class_features().clone()
    method.use_templates(names, templates)
    mean = torch.stack([template_features(tiny, names, t) for t in templates]).mean(dim=0)
    assert torch.allclose(method.class_features(), F.normalize(mean, dim=-1))
    assert not torch.allclose(method.class_features(), single)
