"""run(cell) -> CellResult: one cell of the study, in three steps: its training set, training, evaluation."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import resource
import socket
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.cell import Cell, cell_id, dependencies, set_name

MULTITASK_METRIC = "mean_validation"  # a multitask cell's result: its tasks' mean validation score


@dataclass
class CellResult:
    """One evaluated cell: the result row's fields (study-level ones are added by the store)."""

    cell_id: str
    stage: str
    mode: str | None
    method: str
    backbone: str
    source: str | None
    target: str
    shots: int
    seed: int
    metric: str
    value: float
    val_value: float
    n_train: int
    n_test: int
    epochs_run: int
    best_epoch: int
    wall_s: float
    peak_mem_mb: float
    device: str
    node: str
    status: str
    error: str | None
    code_version: str
    created_at: str
    method_config: str
    label_space: str | None = None
    joint_sampling: str | None = None
    policy: str | None = None
    budget: str | None = None
    moved: bool | None = None  # whether the kept prompt differs from its start (None: not tuned)
    prompt_state: dict | None = field(default=None, repr=False)

    @classmethod
    def failed(cls, cell: Cell, cid: str, error: str) -> CellResult:
        """The result of a cell that raised: its identity, status 'failed' and the error's line."""
        return cls(
            **_named_by(cell, cid),
            shots=cell.shots,
            metric=cell.metric or "",
            value=float("nan"),
            val_value=float("nan"),
            n_train=0,
            n_test=0,
            epochs_run=0,
            best_epoch=-1,
            wall_s=0.0,
            peak_mem_mb=0.0,
            device="",
            node=socket.gethostname(),
            status="failed",
            error=error,
            code_version=code_version(),
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            method_config=json.dumps(cell.config, sort_keys=True),
        )

    def row(self) -> dict:
        """The result as a flat record (no prompt state), ready for a table."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "prompt_state"}


def _named_by(cell: Cell, cid: str) -> dict:
    """The fields of a result that name its cell, whatever became of it."""
    return dict(
        cell_id=cid,
        stage=cell.stage,
        mode=cell.mode,
        label_space=cell.label_space,
        joint_sampling=cell.joint_sampling,
        method=cell.method,
        backbone=cell.backbone,
        source=set_name(cell.tasks) if cell.stage in ("multisource", "groups") else cell.source,
        target=cell.target,
        seed=cell.seed,
        policy=cell.policy,
        budget=cell.budget,
    )


def code_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mvlpt")
    except PackageNotFoundError:
        return "unknown"


def _peak_mem_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak, in MB


@dataclass(frozen=True)
class LabelSpace:
    """The classes a prompt is built for: each task's classes in turn, task k in `slots[k]`.

    Classes are never merged by name: a target's "red" (an object's colour) and a source's "red"
    (a background's colour) are two slots."""

    classnames: tuple[str, ...]
    slots: tuple[slice, ...]
    multihot: bool

    @classmethod
    def of(cls, tasks) -> LabelSpace:
        slots, start = [], 0
        for task in tasks:
            slots.append(slice(start, start + task.num_classes))
            start += task.num_classes
        names = tuple(c for task in tasks for c in task.classnames)
        return cls(names, tuple(slots), any(task.multilabel for task in tasks))

    def labels(self, k: int, labels: np.ndarray) -> np.ndarray:
        """Task k's labels (ids or multi-hot rows over its own classes) over the whole space."""
        slot = self.slots[k]
        if not self.multihot:
            return labels + slot.start
        out = np.zeros((len(labels), len(self.classnames)), dtype=np.float32)
        if labels.ndim == 2:
            out[:, slot] = labels
        else:
            out[np.arange(len(labels)), slot.start + labels] = 1.0
        return out


def is_self_control(cell: Cell) -> bool:
    """The `self` control: a joint cell whose source is its target (its own batches counted twice,
    nothing new): what a joint step's size does alone."""
    return cell.mode == "joint" and cell.source == cell.target


def _as_state(source_state):
    from pipeline.methods import average_states, load_state

    if isinstance(source_state, (str, os.PathLike)):
        return load_state(source_state)
    if isinstance(source_state, (list, tuple)):
        return average_states([_as_state(s) for s in source_state])
    return source_state


@dataclass
class Context:
    """What a process keeps between cells: device, feature cache, options that do not change results."""

    device: str = "auto"
    feature_cache: bool = True
    cache_dir: str | None = None
    workers: int = 0
    _cache: object = None

    def cache(self):
        from pipeline.features import FeatureCache

        if self._cache is None:
            self._cache = FeatureCache(self.cache_dir)
        return self._cache


_DEFAULT_CONTEXT = Context()


@dataclass
class _Inputs:
    """How a cell's method takes images: cached frozen features, or pixels (encoded per step when
    the features are not cached)."""

    backbone: object
    cache: object | None  # the feature cache, when the method takes cached features
    encode: object | None  # the image tower, when a features method runs without the cache
    workers: int

    @classmethod
    def of(cls, backbone, method, ctx: Context) -> _Inputs:
        features = method.input_kind == "features"
        return cls(
            backbone,
            ctx.cache() if features and ctx.feature_cache else None,
            backbone.encode_image if features and not ctx.feature_cache else None,
            ctx.workers,
        )

    def train_split(self, task, idx: np.ndarray) -> torch.Tensor:
        from pipeline.features import load_pixels

        if self.cache is not None:
            return self.cache.features(self.backbone, task, "train", idx, workers=self.workers)
        return load_pixels(self.backbone, task, "train", idx, self.workers)

    def test_batches(self, task):
        from pipeline.features import pixel_batches

        idx = np.arange(len(task.data.labels("test")))
        if self.cache is not None:
            return self.cache.features(self.backbone, task, "test", idx, workers=self.workers).split(1024)
        return pixel_batches(self.backbone, task, "test", idx, 256, self.workers)


def training_set(cell: Cell, tasks, space: LabelSpace, inputs: _Inputs):
    """The target's K-shot training images (and the sources' in joint mode, every task's in a
    multitask cell) and the held-out validation shots that select the prompt: the target's, or
    every task's of a multitask cell. -> (TrainSet, [Validation])."""
    from pipeline.data import few_shot
    from pipeline.loop import TrainSet, Validation

    xs, ys, owner, validation = [], [], [], []
    for k, task in enumerate(tasks):
        labels = task.data.labels("train")
        sample = few_shot(labels, task.classnames, cell.shots, cell.seed, task.name)
        if k == 0 or cell.stage == "multitask":
            columns = space.slots[k] if cell.stage == "multitask" else space.slots[0]
            val_x = inputs.train_split(task, sample.val)
            validation.append(Validation(val_x, labels[sample.val], columns, task.metric))
        xs.append(inputs.train_split(task, sample.train))
        ys.append(space.labels(k, labels[sample.train]))
        owner.append(np.full(len(sample.train), k))
    device = xs[0].device
    data = TrainSet(
        inputs=torch.cat(xs),
        targets=torch.as_tensor(np.concatenate(ys), device=device),
        task=torch.as_tensor(np.concatenate(owner), device=device),
        slots=space.slots,
        label_space=cell.label_space or "per_task",
        sampling="set" if cell.stage == "multitask" else cell.joint_sampling or "paired",
        budget=cell.budget or "equal",
        mirror=is_self_control(cell),
    )
    return data, validation


@dataclass
class _Prepared:
    """What a cell runs with: its config and id, its tasks (the target first), the backbone, the
    label space, the method (holding its source's prompt in init mode) and how it takes images."""

    config: object
    cid: str
    target: object
    tasks: list
    backbone: object
    space: LabelSpace
    method: object
    inputs: _Inputs


def _prepare(cell: Cell, source_state, ctx: Context, device: torch.device) -> _Prepared:
    from pipeline.backbones import load_backbone
    from pipeline.data import resolve_task
    from pipeline.methods import build_method, method_config

    config = method_config(cell.method, cell.config)
    if cell.stage == "multitask":  # bad task names fail before any model is built
        tasks = [resolve_task(t) for t in cell.tasks]
        target = tasks[0]
    else:
        target = resolve_task(cell.target)
        tasks = [target]
    if cell.metric is not None:
        target = dataclasses.replace(target, metric=cell.metric)  # validated against the task here
        tasks[0] = target
    if cell.mode == "joint":  # the target as its own source (the self control) joins as a copy
        tasks.append(resolve_task(cell.source))
    cid = cell_id(cell)
    backbone = load_backbone(cell.backbone, device)
    space = LabelSpace.of(tasks)

    torch.manual_seed(cell.seed)
    method = build_method(cell.method, backbone, list(space.classnames), config, seed=cell.seed)
    if cell.stage == "zeroshot" and target.templates:
        method.use_templates(target.classnames, target.templates)
    if cell.stage in ("multisource", "groups") or (cell.stage == "transfer" and cell.mode == "init"):
        if source_state is None:
            source_state = [run(dep, context=ctx).prompt_state for dep in dependencies(cell)]
        method.load_prompt_state(_as_state(source_state))
    inputs = _Inputs.of(backbone, method, ctx)
    return _Prepared(config, cid, target, tasks, backbone, space, method, inputs)


def _evaluate(cell: Cell, p: _Prepared, trained, n_train: int, start: float, device) -> CellResult:
    """Score the method on the target's test split: the cell's result. A multitask cell has no
    target: its result is the mean validation score over its tasks that selected its prompt."""
    from pipeline.loop import predict, score

    if cell.stage == "multitask":
        metric, value, n_test = MULTITASK_METRIC, trained.val_value, 0
    else:
        test_labels = p.target.data.labels("test")
        logits = predict(
            p.method,
            p.inputs.test_batches(p.target),
            p.inputs.encode,
            p.space.slots[0],
            cell.recipe.precision,
        )
        metric, value, n_test = p.target.metric, score(p.target.metric, logits, test_labels), len(test_labels)
    return CellResult(
        **_named_by(cell, p.cid),
        shots=0 if cell.stage == "zeroshot" else cell.shots,
        metric=metric,
        value=value,
        val_value=trained.val_value if trained else float("nan"),
        n_train=n_train,
        n_test=n_test,
        epochs_run=trained.epochs_run if trained else 0,
        best_epoch=trained.best_epoch if trained else -1,
        moved=trained.moved if trained else None,
        wall_s=time.perf_counter() - start,
        peak_mem_mb=_peak_mem_mb(device),
        device=str(device),
        node=socket.gethostname(),
        status="ok",
        error=None,
        code_version=code_version(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        method_config=json.dumps(dataclasses.asdict(p.config), sort_keys=True),
        prompt_state=trained.state if trained else p.method.prompt_state(),
    )


def run(cell: Cell, source_state=None, context: Context | None = None) -> CellResult:
    """Run one cell. `source_state` (init mode, multisource, groups): a prompt state, a path, or a
    list to average; when absent the cells it starts from are run first. A groups cell is not tuned:
    its group's prompt is scored on the target."""
    from pipeline.loop import pick_device, train

    ctx = context or _DEFAULT_CONTEXT
    start = time.perf_counter()
    device = pick_device(ctx.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    p = _prepare(cell, source_state, ctx, device)

    trained, n_train = None, 0
    if cell.stage not in ("zeroshot", "groups"):
        data, validation = training_set(cell, p.tasks, p.space, p.inputs)
        n_train = len(data.inputs)
        trained = train(p.method, data, validation, cell.recipe, cell.seed, encode=p.inputs.encode)
        p.method.load_prompt_state(trained.state)

    return _evaluate(cell, p, trained, n_train, start, device)
