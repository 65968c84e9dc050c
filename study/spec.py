"""The study spec: a TOML file read by one strict loader into frozen dataclasses."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.cell import BUDGETS, JOINT_SAMPLINGS, LABEL_SPACES, MODES, STAGES
from pipeline.errors import MvlptError
from pipeline.recipe import Recipe

STAGE_RANK = {stage: i for i, stage in enumerate(STAGES)}
DEFAULT_STAGES = ("zeroshot", "single", "transfer")
SPEC_STAGES = tuple(s for s in STAGES if s != "multitask")  # multitask cells come with the stages after it
DEFAULT_MODES = ("joint",)
# What ranks a target's sources (top_k:<name>) or clusters the tasks into groups: a similarity of the
# tasks (known before any transfer cell: visual and label from the frozen model, prompt from the
# single cells), or the pairwise gain on the target's held-out validation shots.
RANKINGS = ("visual", "label", "prompt", "gain")
# `all_but_fold`: the tasks dealt into `folds` folds with the seed; a target starts from the prompt
# tuned on every task outside its fold (the `all` policy at a fraction of its cost: one prompt per
# fold instead of one per target, and no target's set ever holds it).
POLICIES = ("all", "all_but_fold", "random_k", *(f"top_k:{r}" for r in RANKINGS))
RECIPE_KEYS = {f.name: {"int": int, "float": float, "str": str}[f.type] for f in dataclasses.fields(Recipe)}


@dataclass(frozen=True)
class Resources:
    """What one trial asks of the scheduler."""

    cpu: float = 1.0
    gpu: float = 0.0


@dataclass(frozen=True)
class Noise:
    """Extra seeds that measure seed-to-seed noise: every single cell, the transfer cells of `pairs`
    off-diagonal (source, target) pairs and the whole columns (every source) of `targets` targets,
    both drawn with `draw`, run again at each of `seeds`. Whole columns measure the noise that the
    per-target statistics see: within a column the target's single-cell noise cancels."""

    seeds: tuple[int, ...] = ()
    pairs: int = 0
    draw: int = 0
    targets: int = 0


@dataclass(frozen=True)
class Multisource:
    """The multisource stage: for each target, one source set per policy (k sources, or `all` the
    other tasks), a prompt tuned on the set, then the target tuned from it."""

    policies: tuple[str, ...] = ("all",)
    k: int = 3
    budget: str = BUDGETS[0]  # the set prompt's steps (pipeline.cell.BUDGETS)
    folds: int = 4  # the `all_but_fold` policy's folds


@dataclass(frozen=True)
class Groups:
    """The groups stage: per method, the tasks cut into `n_groups` groups by clustering each ranking
    of `by`, and random groups of the same sizes; one prompt per group, scored on every member."""

    by: tuple[str, ...] = ("gain",)
    n_groups: int = 5
    budget: str = BUDGETS[0]


@dataclass(frozen=True)
class StudySpec:
    name: str
    backbone: str
    tasks: tuple[str, ...]
    methods: tuple[tuple[str, tuple], ...]  # (method, sorted (key, value) config items)
    shots: tuple[int, ...] = (5,)
    seeds: tuple[int, ...] = (0,)
    stages: tuple[str, ...] = DEFAULT_STAGES
    modes: tuple[str, ...] = DEFAULT_MODES
    source_seeds: tuple[int, ...] = ()
    label_space: str = LABEL_SPACES[0]  # joint mode's label space and sampling (pipeline.cell)
    joint_sampling: str = JOINT_SAMPLINGS[0]
    recipe: tuple[tuple[str, object], ...] = ()  # overrides of the kernel's Recipe defaults
    # per method, overrides of `recipe` ([recipe.upt] lr = 0.1): the methods' prompts differ in kind
    method_recipes: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()
    resources: Resources = field(default_factory=Resources)
    noise: Noise = field(default_factory=Noise)
    multisource: Multisource = field(default_factory=Multisource)
    groups: Groups = field(default_factory=Groups)
    out: str = "results"
    suite: str | None = None  # the suite the task list came from, if any

    def to_dict(self) -> dict:
        """The spec as the TOML document that would load back to it."""
        data = {
            "name": self.name,
            "backbone": self.backbone,
            "out": self.out,
            "tasks": {"suite": self.suite} if self.suite else list(self.tasks),
            "methods": {m: dict(cfg) for m, cfg in self.methods},
            "shots": list(self.shots),
            "seeds": list(self.seeds),
            "stages": list(self.stages),
            "modes": list(self.modes),
            "label_space": self.label_space,
            "joint_sampling": self.joint_sampling,
            "recipe": dict(self.recipe) | {m: dict(items) for m, items in self.method_recipes},
            "resources": dataclasses.asdict(self.resources),
        }
        if self.source_seeds:
            data["source_seeds"] = list(self.source_seeds)
        if self.noise.seeds:
            data["noise"] = dataclasses.asdict(self.noise) | {"seeds": list(self.noise.seeds)}
        if "multisource" in self.stages:
            data["multisource"] = dataclasses.asdict(self.multisource) | {
                "policies": list(self.multisource.policies)
            }
        if "groups" in self.stages:
            data["groups"] = dataclasses.asdict(self.groups) | {"by": list(self.groups.by)}
        return data

    def recipe_for(self, method: str) -> Recipe:
        """The recipe of `method`'s cells: the shared one with the method's own overrides."""
        own = dict(self.method_recipes).get(method, ())
        return Recipe(**(dict(self.recipe) | dict(own)))

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


def _fail(where: str, message: str):
    raise MvlptError(f"{where}: {message}")


NAME_MAX = 100  # a study name is a folder name and a column value: short, one line, no separators


def check_name(name: str, where: str) -> str:
    """`name` when it can be a study's folder name, else one error line naming the problem."""
    bad = [c for c in name if c in "/\\\0" or not c.isprintable()]
    # a folder name is at most 255 bytes on common filesystems: 100 characters of CJK are 300
    long = len(name) > NAME_MAX or len(name.encode("utf-8", "surrogatepass")) > NAME_MAX
    if not name.strip() or name.startswith(".") or bad or long:
        why = (
            f"at most {NAME_MAX} characters (and {NAME_MAX} bytes in UTF-8)"
            if long
            else "a plain folder name"
        )
        _fail(
            where, f"'name' must be {why} (no path separator, control character or leading '.'), got {name!r}"
        )
    return name


def _check_keys(table: dict, allowed, where: str, section: str) -> None:
    for key in table:
        if key not in allowed:
            place = f" in [{section}]" if section else ""
            _fail(where, f"unknown key '{key}'{place} (known: {', '.join(sorted(allowed))})")


def _typed(value, kind, where: str, key: str):
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _fail(where, f"'{key}' must be {kind.__name__}, got {value!r}")
    return value


def _int_list(value, where: str, key: str, minimum: int) -> tuple[int, ...]:
    items = value if isinstance(value, list) else [value]
    out = tuple(_typed(v, int, where, key) for v in items)
    if not out:
        _fail(where, f"'{key}' is empty")
    if any(v < minimum for v in out):
        _fail(where, f"'{key}' values must be at least {minimum}, got {list(out)}")
    if len(set(out)) != len(out):
        _fail(where, f"'{key}' repeats a value: {list(out)}")
    return out


def _choices(value, allowed, where: str, key: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    for v in items:
        if v not in allowed:
            _fail(where, f"'{key}' has unknown value {v!r} (known: {', '.join(allowed)})")
    return tuple(dict.fromkeys(items))


def _choice(value, allowed, where: str, key: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        _fail(where, f"'{key}' has unknown value {value!r} (known: {', '.join(allowed)})")
    return value


def task_key(task: str) -> str:
    """What a task name means: an image folder's path names the same task with or without a
    trailing '/' or './'."""
    return os.path.normpath(task) if os.sep in task or os.path.isdir(task) else task


def _tasks(value, where: str) -> tuple[tuple[str, ...], str | None]:
    if isinstance(value, dict):
        _check_keys(value, {"suite"}, where, "tasks")
        from pipeline.data.tasks import suite_tasks

        return tuple(suite_tasks(_typed(value.get("suite"), str, where, "tasks.suite"))), value["suite"]
    if not isinstance(value, list) or not value or not all(isinstance(t, str) for t in value):
        _fail(where, "'tasks' must be a list of task names or {suite = \"NAME\"}")
    seen: dict[str, str] = {}
    for task in value:
        key = task_key(task)
        if key in seen:
            same = f"'{seen[key]}' and '{task}' name the same task" if seen[key] != task else f"'{task}'"
            _fail(where, f"'tasks' repeats a task: {same}")
        seen[key] = task
    return tuple(value), None


def _methods(value, where: str) -> tuple[tuple[str, tuple], ...]:
    from pipeline.methods import TUNED_METHODS, method_config

    if not isinstance(value, dict) or not value:
        _fail(where, "'methods' must be a table with one sub-table per method, e.g. [methods.coop]")
    out = []
    for name, cfg in value.items():
        if name not in TUNED_METHODS:
            _fail(where, f"unknown method '{name}' (known: {', '.join(TUNED_METHODS)})")
        if not isinstance(cfg, dict):
            _fail(where, f"[methods.{name}] must be a table")
        try:
            method_config(name, cfg)
        except MvlptError as err:
            _fail(where, str(err))
        out.append((name, tuple(sorted(cfg.items()))))
    return tuple(out)


def _recipe_items(value: dict, where: str, section: str) -> tuple[tuple[str, object], ...]:
    _check_keys(value, RECIPE_KEYS, where, section)
    typed = {k: _typed(v, RECIPE_KEYS[k], where, f"{section}.{k}") for k, v in value.items()}
    try:
        Recipe(**typed)
    except MvlptError as err:
        _fail(where, str(err))
    return tuple(sorted(typed.items()))


def _recipe(value, where: str, methods) -> tuple[tuple, tuple]:
    """The [recipe] table: (shared overrides, per-method overrides from its [recipe.<method>] tables,
    each checked on top of the shared ones)."""
    if not isinstance(value, dict):
        _fail(where, "[recipe] must be a table")
    names = [m for m, _ in methods]
    own = {k: v for k, v in value.items() if isinstance(v, dict)}
    for method in own:
        if method not in names:
            _fail(where, f"[recipe.{method}] names no method of the study (its methods: {', '.join(names)})")
    shared = _recipe_items({k: v for k, v in value.items() if k not in own}, where, "recipe")
    per_method = tuple(
        (m, _recipe_items(dict(shared) | own[m], where, f"recipe.{m}")) for m in names if m in own
    )
    return shared, tuple((m, tuple(i for i in items if i not in shared)) for m, items in per_method)


def _resources(value, where: str) -> Resources:
    if not isinstance(value, dict):
        _fail(where, "[resources] must be a table")
    _check_keys(value, {"cpu", "gpu"}, where, "resources")
    res = Resources(**{k: _typed(v, float, where, f"resources.{k}") for k, v in value.items()})
    if res.cpu <= 0 or res.gpu < 0:
        _fail(where, f"resources must be positive, got cpu={res.cpu} gpu={res.gpu}")
    return res


def _noise(value, where: str, seeds: tuple[int, ...], n_tasks: int) -> Noise:
    if not isinstance(value, dict):
        _fail(where, "[noise] must be a table")
    _check_keys(value, {"seeds", "pairs", "draw", "targets"}, where, "noise")
    noise = Noise(
        seeds=_int_list(value.get("seeds", []), where, "noise.seeds", 0) if value.get("seeds") else (),
        pairs=_typed(value.get("pairs", 0), int, where, "noise.pairs"),
        draw=_typed(value.get("draw", 0), int, where, "noise.draw"),
        targets=_typed(value.get("targets", 0), int, where, "noise.targets"),
    )
    if not 0 <= noise.targets <= n_tasks:
        _fail(where, f"'noise.targets' must be between 0 and {n_tasks}, got {noise.targets}")
    if set(noise.seeds) & set(seeds):
        _fail(where, f"'noise.seeds' repeats a seed of 'seeds': {sorted(set(noise.seeds) & set(seeds))}")
    if not 0 <= noise.pairs <= n_tasks * (n_tasks - 1):
        _fail(where, f"'noise.pairs' must be between 0 and {n_tasks * (n_tasks - 1)}, got {noise.pairs}")
    return noise


def _multisource(value, where: str, n_tasks: int | None) -> Multisource:
    """The [multisource] table; its k is checked against the tasks when the stage runs (n_tasks)."""
    if not isinstance(value, dict):
        _fail(where, "[multisource] must be a table")
    _check_keys(value, {"policies", "k", "budget", "folds"}, where, "multisource")
    ms = Multisource(
        policies=_choices(value.get("policies", ["all"]), POLICIES, where, "multisource.policies"),
        k=_typed(value.get("k", 3), int, where, "multisource.k"),
        budget=_choice(value.get("budget", BUDGETS[0]), BUDGETS, where, "multisource.budget"),
        folds=_typed(value.get("folds", 4), int, where, "multisource.folds"),
    )
    if n_tasks is not None and "all_but_fold" in ms.policies and not 2 <= ms.folds <= n_tasks:
        _fail(where, f"'multisource.folds' must be between 2 and {n_tasks} (the tasks), got {ms.folds}")
    if not ms.policies:
        _fail(where, "'multisource.policies' is empty")
    if n_tasks is not None and not 1 <= ms.k <= n_tasks - 1:
        _fail(where, f"'multisource.k' must be between 1 and {n_tasks - 1} (the other tasks), got {ms.k}")
    return ms


def _groups(value, where: str, n_tasks: int | None) -> Groups:
    if not isinstance(value, dict):
        _fail(where, "[groups] must be a table")
    _check_keys(value, {"by", "n_groups", "budget"}, where, "groups")
    groups = Groups(
        by=_choices(value.get("by", ["gain"]), RANKINGS, where, "groups.by"),
        n_groups=_typed(value.get("n_groups", 5), int, where, "groups.n_groups"),
        budget=_choice(value.get("budget", BUDGETS[0]), BUDGETS, where, "groups.budget"),
    )
    if not groups.by:
        _fail(where, "'groups.by' is empty")
    if n_tasks is not None and not 1 <= groups.n_groups <= n_tasks:
        _fail(where, f"'groups.n_groups' must be between 1 and {n_tasks} (the tasks), got {groups.n_groups}")
    return groups


def _check_evidence(spec: StudySpec, where: str) -> None:
    """A ranking by gain reads the study's transfer cells, one by prompt its single cells."""
    used = set()
    if "multisource" in spec.stages:
        used |= {p.removeprefix("top_k:") for p in spec.multisource.policies if p.startswith("top_k:")}
    if "groups" in spec.stages:
        used |= set(spec.groups.by)
    for ranking, stage in (("gain", "transfer"), ("prompt", "single")):
        if ranking in used and stage not in spec.stages:
            _fail(
                where,
                f"ranking tasks by {ranking} reads the study's {stage} cells: add '{stage}' to 'stages'",
            )


TOP_KEYS = {
    "name",
    "backbone",
    "tasks",
    "methods",
    "shots",
    "seeds",
    "stages",
    "modes",
    "source_seeds",
    "label_space",
    "joint_sampling",
    "recipe",
    "resources",
    "noise",
    "multisource",
    "groups",
    "out",
}


def spec_from_dict(data: dict, where: str = "spec") -> StudySpec:
    """Validate a parsed TOML document; the first problem is raised as one line naming it."""
    _check_keys(data, TOP_KEYS, where, "")
    for required in ("name", "backbone", "tasks", "methods"):
        if required not in data:
            _fail(where, f"missing key '{required}'")
    name = check_name(_typed(data["name"], str, where, "name"), where)
    out = _typed(data.get("out", "results"), str, where, "out")
    if not out.strip() or "\0" in out or "\n" in out:
        _fail(where, f"'out' must name a folder, got {out!r}")
    tasks, suite = _tasks(data["tasks"], where)
    seeds = _int_list(data.get("seeds", [0]), where, "seeds", 0)
    stages = _choices(data.get("stages", list(DEFAULT_STAGES)), SPEC_STAGES, where, "stages")
    methods = _methods(data["methods"], where)
    recipe, method_recipes = _recipe(data.get("recipe", {}), where, methods)
    spec = StudySpec(
        name=name,
        backbone=_typed(data["backbone"], str, where, "backbone"),
        tasks=tasks,
        suite=suite,
        methods=methods,
        shots=_int_list(data.get("shots", [5]), where, "shots", 1),
        seeds=seeds,
        stages=stages,
        modes=_choices(data.get("modes", list(DEFAULT_MODES)), MODES, where, "modes"),
        source_seeds=_int_list(data["source_seeds"], where, "source_seeds", 0)
        if "source_seeds" in data
        else (),
        label_space=_choice(data.get("label_space", LABEL_SPACES[0]), LABEL_SPACES, where, "label_space"),
        joint_sampling=_choice(
            data.get("joint_sampling", JOINT_SAMPLINGS[0]), JOINT_SAMPLINGS, where, "joint_sampling"
        ),
        recipe=recipe,
        method_recipes=method_recipes,
        resources=_resources(data.get("resources", {}), where),
        noise=_noise(data.get("noise", {}), where, seeds, len(tasks)),
        multisource=_multisource(
            data.get("multisource", {}), where, len(tasks) if "multisource" in stages else None
        ),
        groups=_groups(data.get("groups", {}), where, len(tasks) if "groups" in stages else None),
        out=out,
    )
    _check_evidence(spec, where)
    return spec


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a TOML study spec."""
    path = Path(path)
    if not path.is_file():
        raise MvlptError(f"spec file not found: {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise MvlptError(f"spec {path}: malformed TOML: {err}") from err
    except UnicodeDecodeError as err:
        raise MvlptError(f"spec {path}: not a text file") from err
    return spec_from_dict(data, where=f"spec {path}")
