"""Tasks and their data: the registry, dataset adapters, and the seeded K-shot sampler."""

from pipeline.data.sampler import FewShot, few_shot
from pipeline.data.sources import ImageFolderSource, TensorSource, TorchvisionSource
from pipeline.data.tasks import (
    ELEVATER,
    METRICS,
    Task,
    known_tasks,
    register_tensor_task,
    resolve_task,
)

__all__ = [
    "ELEVATER",
    "METRICS",
    "FewShot",
    "ImageFolderSource",
    "Task",
    "TensorSource",
    "TorchvisionSource",
    "few_shot",
    "known_tasks",
    "register_tensor_task",
    "resolve_task",
]
