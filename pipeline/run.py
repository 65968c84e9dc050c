"""run(cell) -> CellResult: one cell of the study, composed from backbone, task, method and loop."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import resource
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.data.tasks import METRICS
from pipeline.errors import MvlptError
from pipeline.loop import Recipe

STAGES = ("zeroshot", "single", "transfer")
MODES = ("init", "joint")
IDENTITY_VERSION = 1
# Method options added after identity version 1: left out of a cell's identity while at their
# default, so that cells of studies begun before them keep their ids (and are not run again).
LATER_OPTIONS = {"vpt": {"gated": False}, "upt": {"init": "", "gated": False}}
LATER_RECIPE = {"min_steps": 0}  # the same, for recipe fields


@dataclass(frozen=True)
class Cell:
    """Everything that determines one result. `method_config` holds (key, value) pairs."""

    method: str
    target: str
    stage: str = "single"
    mode: str | None = None
    source: str | None = None
    backbone: str = "tiny"
    shots: int = 5
    seed: int = 0
    recipe: Recipe = field(default_factory=Recipe)
    method_config: tuple = ()
    source_seeds: tuple[int, ...] = ()  # init mode: average the source prompt over these seeds
    metric: str | None = None  # overrides the target task's own metric

    def __post_init__(self):
        object.__setattr__(self, "method_config", tuple(sorted(dict(self.method_config).items())))
        object.__setattr__(self, "source_seeds", tuple(self.source_seeds))
        if self.stage not in STAGES:
            raise MvlptError(f"unknown stage '{self.stage}' (known: {', '.join(STAGES)})")
        if (self.stage == "zeroshot") != (self.method == "zeroshot"):
            raise MvlptError("the zeroshot stage goes with the zeroshot method and only with it")
        if self.stage == "transfer":
            if self.mode not in MODES:
                raise MvlptError(f"a transfer cell needs --mode init or joint, got {self.mode!r}")
            if not self.source:
                raise MvlptError("a transfer cell needs a source task (--source)")
        elif self.source or self.mode:
            raise MvlptError(f"a {self.stage} cell takes no source task or mode")
        if self.source_seeds and self.mode != "init":
            raise MvlptError("source seeds only apply to init-mode transfer")
        if self.shots < 1:
            raise MvlptError(f"shots must be at least 1, got {self.shots}")
        if self.seed < 0:
            raise MvlptError(f"seed must be non-negative, got {self.seed}")
        if self.metric is not None and self.metric not in METRICS:
            raise MvlptError(f"unknown metric '{self.metric}' (known: {', '.join(METRICS)})")

    @property
    def config(self) -> dict:
        return dict(self.method_config)


def dependencies(cell: Cell) -> list[Cell]:
    """Cells whose results this cell needs: an init transfer needs its source's single cells."""
    if cell.stage != "transfer" or cell.mode != "init":
        return []
    seeds = cell.source_seeds or (cell.seed,)
    return [
        dataclasses.replace(
            cell,
            stage="single",
            mode=None,
            source=None,
            target=cell.source,
            seed=s,
            source_seeds=(),
        )
        for s in seeds
    ]


def _identity_config(cell: Cell) -> dict:
    from pipeline.methods import method_config

    return _without_later(
        dataclasses.asdict(method_config(cell.method, cell.config)), LATER_OPTIONS.get(cell.method, {})
    )


def _without_later(fields: dict, later: dict) -> dict:
    """`fields` less those added after identity version 1 that are at their defaults (`later`)."""
    return {k: v for k, v in fields.items() if k not in later or v != later[k]}


def cell_id(cell: Cell) -> str:
    """Content hash of everything that determines the cell's result, its dependencies included."""
    from pipeline.clip import backbone_identity, parse_backbone
    from pipeline.data import resolve_task

    payload = {
        "v": IDENTITY_VERSION,
        "method": cell.method,
        "config": _identity_config(cell),
        "backbone": backbone_identity(parse_backbone(cell.backbone)),
        "stage": cell.stage,
        "target": resolve_task(cell.target).identity,
        "metric": cell.metric,
    }
    if cell.stage != "zeroshot":  # zero-shot reads the whole test split: no sample, no training
        recipe = _without_later(dataclasses.asdict(cell.recipe), LATER_RECIPE)
        payload.update(shots=cell.shots, seed=cell.seed, recipe=recipe)
    if cell.stage == "transfer":
        payload.update(mode=cell.mode, source=resolve_task(cell.source).identity)
        payload["depends_on"] = [cell_id(d) for d in dependencies(cell)]
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass
class CellResult:
    """One evaluated cell: the SPEC 7 fields (study-level ones are added by the store)."""

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
    prompt_state: dict | None = field(default=None, repr=False)

    def row(self) -> dict:
        """The result as a flat record (no prompt state), ready for a table."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "prompt_state"}


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


def _union_targets(labels: np.ndarray, classnames, union_index: dict, multihot: bool, n_union: int):
    """Re-express a task's labels over the union label space."""
    mapping = np.asarray([union_index[c] for c in classnames])
    if not multihot:
        return mapping[labels]
    out = np.zeros((len(labels), n_union), dtype=np.float32)
    if labels.ndim == 2:
        out[:, mapping] = labels
    else:
        out[np.arange(len(labels)), mapping[labels]] = 1.0
    return out


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


def run(cell: Cell, source_state=None, context: Context | None = None) -> CellResult:
    """Run one cell. `source_state` (init mode): a prompt state, a path, or a list to average;
    when absent the source's single cells are run first."""
    from pipeline.clip import load_backbone
    from pipeline.data import few_shot, resolve_task
    from pipeline.features import load_pixels, pixel_batches
    from pipeline.loop import pick_device, predict, score, train
    from pipeline.methods import build_method, method_config

    ctx = context or _DEFAULT_CONTEXT
    start = time.perf_counter()
    device = pick_device(ctx.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    config = method_config(cell.method, cell.config)
    target = resolve_task(cell.target)  # bad task names fail before any model is built
    source = resolve_task(cell.source) if cell.source else None
    if cell.metric is not None:
        target = dataclasses.replace(target, metric=cell.metric)  # validated against the task here
    cid = cell_id(cell)
    backbone = load_backbone(cell.backbone, device)
    cache = ctx.cache()

    def features_of(task, split, idx):
        return cache.features(backbone, task, split, idx, workers=ctx.workers)

    # --- the training set: target shots, plus the source's in joint mode ---------------------
    classnames = list(target.classnames)
    parts = []  # (task, indices, labels over the union)
    if cell.stage != "zeroshot":
        sample = few_shot(
            target.source.labels("train"), target.classnames, cell.shots, cell.seed, target.name
        )
        parts.append((target, sample.train))
    if cell.mode == "joint" and source.identity != target.identity:  # the diagonal is the single run
        src_sample = few_shot(
            source.source.labels("train"), source.classnames, cell.shots, cell.seed, source.name
        )
        parts.append((source, src_sample.train))
        classnames += [c for c in source.classnames if c not in classnames]
    union = {c: i for i, c in enumerate(classnames)}
    multihot = any(task.multilabel for task, _ in parts) or target.multilabel

    torch.manual_seed(cell.seed)
    method = build_method(cell.method, backbone, classnames, config, seed=cell.seed)
    if cell.stage == "transfer" and cell.mode == "init":
        if source_state is None:
            source_state = [run(dep, context=ctx).prompt_state for dep in dependencies(cell)]
        method.load_prompt_state(_as_state(source_state))

    use_features = method.input_kind == "features" and ctx.feature_cache
    encode = backbone.encode_image if method.input_kind == "features" and not ctx.feature_cache else None

    def inputs_of(task, split, idx):
        if use_features:
            return features_of(task, split, idx)
        return load_pixels(backbone, task, split, idx, ctx.workers)

    columns = slice(0, target.num_classes)
    trained = None
    if parts:
        xs, ys = [], []
        for task, idx in parts:
            xs.append(inputs_of(task, "train", idx))
            ys.append(
                _union_targets(task.source.labels("train")[idx], task.classnames, union, multihot, len(union))
            )
        inputs = torch.cat(xs)
        targets = torch.as_tensor(np.concatenate(ys), device=device)
        val_x = inputs_of(target, "train", sample.val)
        val_y = target.source.labels("train")[sample.val]
        trained = train(
            method,
            inputs,
            targets,
            val_x,
            val_y,
            target.metric,
            cell.recipe,
            cell.seed,
            encode=encode,
            val_columns=columns,
        )
        method.load_prompt_state(trained.state)

    test_labels = target.source.labels("test")
    test_idx = np.arange(len(test_labels))
    if use_features:
        test_batches = features_of(target, "test", test_idx).split(1024)
    else:
        test_batches = pixel_batches(backbone, target, "test", test_idx, 256, ctx.workers)
    logits = predict(method, test_batches, encode, columns, cell.recipe.precision)
    value = score(target.metric, logits, test_labels)

    return CellResult(
        cell_id=cid,
        stage=cell.stage,
        mode=cell.mode,
        method=cell.method,
        backbone=cell.backbone,
        source=cell.source,
        target=cell.target,
        shots=cell.shots if parts else 0,
        seed=cell.seed,
        metric=target.metric,
        value=value,
        val_value=trained.val_value if trained else float("nan"),
        n_train=sum(len(i) for _, i in parts),
        n_test=len(test_labels),
        epochs_run=trained.epochs_run if trained else 0,
        best_epoch=trained.best_epoch if trained else -1,
        wall_s=time.perf_counter() - start,
        peak_mem_mb=_peak_mem_mb(device),
        device=str(device),
        node=socket.gethostname(),
        status="ok",
        error=None,
        code_version=code_version(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        method_config=json.dumps(dataclasses.asdict(config), sort_keys=True),
        prompt_state=trained.state if trained else method.prompt_state(),
    )


def make_cell(
    method: str,
    target: str,
    *,
    source: str | None = None,
    mode: str | None = None,
    method_config: Mapping | None = None,
    recipe: Recipe | None = None,
    **kw,
) -> Cell:
    """A Cell with the stage inferred: zeroshot for the zeroshot method, transfer with a source."""
    stage = "zeroshot" if method == "zeroshot" else ("transfer" if source or mode else "single")
    return Cell(
        method=method,
        target=target,
        stage=stage,
        mode=mode,
        source=source,
        method_config=tuple((method_config or {}).items()),
        recipe=recipe or Recipe(),
        **kw,
    )
