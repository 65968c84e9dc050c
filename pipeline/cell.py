"""A cell of the study: what determines one result, the cells it needs, and its content identity."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.errors import MvlptError
from pipeline.recipe import Recipe

# Also the order in which they run and are listed. `multitask` cells (one prompt tuned jointly on a
# set of tasks) are what `multisource` and `groups` cells start from; a spec asks for the latter two.
STAGES = ("zeroshot", "single", "transfer", "multitask", "multisource", "groups")
SET_STAGES = ("multitask", "multisource", "groups")  # the stages whose cells name a set of tasks
MODES = ("init", "joint")
# Joint mode: each task keeps its own class slots; a training image's softmax runs over its own
# task's slots (`per_task`) or over every slot of the joint label space (`union`, the reference's).
LABEL_SPACES = ("per_task", "union")
# Joint mode: `paired` takes the target's single-cell batches step for step plus as many source
# images; `concat` shuffles one concatenation of both and counts epochs over both (the reference's).
JOINT_SAMPLINGS = ("paired", "concat")
# A multitask cell's steps: `per_task` (each task of the set gets its single cell's batches, the
# reference's epochs counted over all the set's shots) or `equal` (one single cell's steps for the
# whole set: a named control).
BUDGETS = ("per_task", "equal")
# What each protocol changed; cells of an earlier one computed other numbers, so a study folder of
# an earlier protocol is not resumed.
PROTOCOLS = {
    2: "validation shots held out of training, per-task label slots, label_space and joint_sampling",
    3: "the kept checkpoint chosen among trained ones (recipe.selection), the joint diagonal as the "
    "self control, multitask prompts on a per-task budget",
}
IDENTITY_VERSION = max(PROTOCOLS)


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
    label_space: str | None = None  # joint mode only; None there means the first of LABEL_SPACES
    joint_sampling: str | None = None  # joint mode only; None there means the first of JOINT_SAMPLINGS
    # multitask: the tasks tuned on together; multisource: the source set the target starts from;
    # groups: the group the target belongs to. Sorted; () for the other stages.
    tasks: tuple[str, ...] = ()
    policy: str | None = None  # multisource and groups: the rule that chose `tasks` (a label)
    budget: str | None = None  # set stages only (BUDGETS); None there means the first of BUDGETS

    def __post_init__(self):
        object.__setattr__(self, "method_config", tuple(sorted(dict(self.method_config).items())))
        object.__setattr__(self, "source_seeds", tuple(self.source_seeds))
        object.__setattr__(self, "tasks", tuple(sorted(self.tasks)))
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
        self._check_task_set()
        if self.source_seeds and self.mode != "init":
            raise MvlptError("source seeds only apply to init-mode transfer")
        self._check_joint_options()
        if self.shots < 1:
            raise MvlptError(f"shots must be at least 1, got {self.shots}")
        if self.seed < 0:
            raise MvlptError(f"seed must be non-negative, got {self.seed}")
        from pipeline.data.tasks import METRICS

        if self.metric is not None and self.metric not in METRICS:
            raise MvlptError(f"unknown metric '{self.metric}' (known: {', '.join(METRICS)})")

    def _check_task_set(self) -> None:
        if self.stage not in SET_STAGES:
            if self.tasks or self.policy is not None or self.budget is not None:
                raise MvlptError(f"a {self.stage} cell takes no task set, policy or budget")
            return
        if self.budget is None:
            object.__setattr__(self, "budget", BUDGETS[0])
        elif self.budget not in BUDGETS:
            raise MvlptError(f"unknown budget '{self.budget}' (known: {', '.join(BUDGETS)})")
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise MvlptError(f"a {self.stage} cell needs a set of distinct tasks, got {list(self.tasks)}")
        if self.stage == "multitask":
            if self.target != set_name(self.tasks) or self.policy is not None:
                raise MvlptError("a multitask cell is named by its tasks and takes no policy")
            return
        if not self.policy:
            raise MvlptError(f"a {self.stage} cell needs the policy that chose its tasks")
        if self.stage == "multisource" and self.target in self.tasks:
            raise MvlptError(f"a multisource cell's sources must leave its target '{self.target}' out")
        if self.stage == "groups" and self.target not in self.tasks:
            raise MvlptError(f"a groups cell's target '{self.target}' must be a member of its group")

    def _check_joint_options(self) -> None:
        options = {"label_space": LABEL_SPACES, "joint_sampling": JOINT_SAMPLINGS}
        for name, known in options.items():
            value = getattr(self, name)
            if self.mode != "joint":
                if value is not None:
                    raise MvlptError(f"{name} applies to joint-mode transfer only")
                continue
            if value is None:
                object.__setattr__(self, name, known[0])
            elif value not in known:
                raise MvlptError(f"unknown {name} '{value}' (known: {', '.join(known)})")

    @property
    def config(self) -> dict:
        return dict(self.method_config)


def set_name(tasks) -> str:
    """How a set of tasks is named in a result row (its `target` for a multitask cell, its `source`
    for multisource and groups cells): the names sorted and joined by '+'."""
    return "+".join(sorted(tasks))


def multitask_cell(cell: Cell, tasks) -> Cell:
    """The multitask cell over `tasks` with `cell`'s method, backbone, shots, seed and recipe."""
    return dataclasses.replace(
        cell,
        stage="multitask",
        target=set_name(tasks),
        tasks=tuple(tasks),
        policy=None,
        mode=None,
        source=None,
        source_seeds=(),
        metric=None,
        label_space=None,
        joint_sampling=None,
    )


def dependencies(cell: Cell) -> list[Cell]:
    """Cells whose results this cell needs: an init transfer needs its source's single cells, a
    multisource or groups cell the multitask cell over its set."""
    if cell.stage in ("multisource", "groups"):
        return [multitask_cell(cell, cell.tasks)]
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


def cell_id(cell: Cell) -> str:
    """Content hash of everything that determines the cell's result, its dependencies included."""
    from pipeline.backbones import backbone_identity, parse_backbone
    from pipeline.data import resolve_task
    from pipeline.methods import method_config

    payload = {
        "v": IDENTITY_VERSION,
        "method": cell.method,
        "config": dataclasses.asdict(method_config(cell.method, cell.config)),
        "backbone": backbone_identity(parse_backbone(cell.backbone)),
        "stage": cell.stage,
        "metric": cell.metric,
    }
    if cell.stage == "multitask":  # named by its tasks: their identities, in the order of their names
        payload["tasks"] = [resolve_task(t).identity for t in cell.tasks]
    else:
        payload["target"] = resolve_task(cell.target).identity
    if cell.stage == "zeroshot" and resolve_task(cell.target).templates:  # the task's own, not the config's
        payload["templates"] = list(resolve_task(cell.target).templates)
    if cell.stage in ("multisource", "groups"):
        payload.update(policy=cell.policy, depends_on=[cell_id(d) for d in dependencies(cell)])
    if cell.stage == "multitask":
        payload["budget"] = cell.budget
    if cell.stage != "zeroshot":  # zero-shot reads the whole test split: no sample, no training
        payload.update(shots=cell.shots, seed=cell.seed, recipe=dataclasses.asdict(cell.recipe))
    if cell.stage == "transfer":
        payload.update(mode=cell.mode, source=resolve_task(cell.source).identity)
        payload["depends_on"] = [cell_id(d) for d in dependencies(cell)]
    if cell.mode == "joint":
        payload.update(label_space=cell.label_space, joint_sampling=cell.joint_sampling)
    blob = json.dumps(payload, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def make_cell(
    method: str,
    target: str,
    *,
    source: str | None = None,
    mode: str | None = None,
    method_config: Mapping | None = None,
    recipe: Recipe | None = None,
    stage: str | None = None,
    **kw,
) -> Cell:
    """A Cell; unless given, the stage is inferred: zeroshot for the zeroshot method, transfer with a
    source, else single."""
    if stage is None:
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
