"""Launch, resume and inspect studies: spec + overrides -> grid -> missing cells -> scheduler."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pipeline.cell import IDENTITY_VERSION, PROTOCOLS
from pipeline.errors import MvlptError
from study.plan import Plan
from study.spec import STAGE_RANK, StudySpec, spec_from_dict
from study.store import SPEC_JSON, SPEC_TOML, Store, local_location

SPECS_DIR = Path(__file__).parent / "specs"
# Fields that enter every cell's identity: changing one would silently start a different study in
# the same folder, so it is refused there. Lists (tasks, seeds, methods...) may grow or shrink.
IDENTITY_FIELDS = ("backbone", "recipe", "methods", "label_space", "joint_sampling")


def shipped_specs() -> list[str]:
    return sorted(p.stem for p in SPECS_DIR.glob("*.toml"))


def resolve_spec_path(name_or_path: str | None) -> Path:
    """A shipped spec name ('default', 'elevater') or a TOML path."""
    if name_or_path is None:
        name_or_path = "default"
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = SPECS_DIR / f"{name_or_path}.toml"
    if shipped.is_file():
        return shipped
    raise MvlptError(f"spec file not found: {name_or_path} (shipped specs: {', '.join(shipped_specs())})")


def apply_overrides(spec: StudySpec, **overrides) -> StudySpec:
    """Command-line overrides (methods, tasks, seeds, shots, epochs, mode, name, out)."""
    return spec_from_dict(overridden(spec, **overrides), where="command line")


def overridden(spec: StudySpec, **overrides) -> dict:
    """The spec's TOML document with the command line's flags (apply_overrides) set, not validated."""
    data = spec.to_dict()
    if overrides.get("methods"):
        from pipeline.methods import TUNED_METHODS

        unknown = [m for m in overrides["methods"] if m not in data["methods"]]
        configs = {m: data["methods"].get(m, {}) for m in overrides["methods"]}
        if unknown and not all(m in TUNED_METHODS for m in unknown):
            raise MvlptError(f"--methods: unknown method '{unknown[0]}' (known: {', '.join(TUNED_METHODS)})")
        data["methods"] = configs
        # a method left out takes its own recipe table with it
        data["recipe"] = {k: v for k, v in data["recipe"].items() if not isinstance(v, dict) or k in configs}
    if overrides.get("tasks"):
        data["tasks"] = list(overrides["tasks"])
    for key in ("seeds", "shots"):
        if overrides.get(key) is not None:
            data[key] = list(overrides[key])
    if overrides.get("epochs") is not None:
        data["recipe"] = {**data["recipe"], "epochs": overrides["epochs"]}
    if overrides.get("mode"):
        data["modes"] = list(overrides["mode"])
    for key in ("name", "out"):
        if overrides.get(key) is not None:  # an empty one is refused by the loader, not ignored
            data[key] = overrides[key]
    return data


def _identity(spec: StudySpec) -> dict:
    data = spec.to_dict()
    return {key: data[key] for key in IDENTITY_FIELDS}


def check_folder(spec: StudySpec, store: Store, backbone_id: str | None = None) -> None:
    """Refuse a folder that holds another study, or this study with inputs that change identities.
    `backbone_id` is what the spec's backbone resolves to now (a checkpoint's content, the built-in
    backbone's pre-training key): the same name may name another model after an update."""
    meta = store.meta()
    if meta is None:
        if store.cell_files():
            raise MvlptError(f"{store.location} holds results that are not an mvlpt study (no {SPEC_JSON})")
        return
    if meta.get("name") != spec.name:
        raise MvlptError(f"{store.location} holds another study ('{meta.get('name')}'); use --out or --name")
    protocol = meta.get("protocol", 1)  # folders written before the field are of version 1
    if protocol != IDENTITY_VERSION and store.cell_files():
        raise MvlptError(
            f"{store.location} holds cells of protocol {protocol}, which this version does not compute "
            f"(protocol {IDENTITY_VERSION}: {PROTOCOLS[IDENTITY_VERSION]}); use --name NEW for a new study"
        )
    _check_choice_sizes(spec, meta, store.location)
    old, new = meta.get("identity", {}), _identity(spec)
    stored_id = meta.get("backbone_identity")
    if backbone_id is not None and stored_id is not None and stored_id != backbone_id:
        raise MvlptError(
            f"{store.location}: backbone '{spec.backbone}' now resolves to another model than the one "
            f"this study ran with (its weights or pre-training changed), which would mix two models' "
            f"cells; use --name NEW for a new study"
        )
    for key in IDENTITY_FIELDS:
        if key == "methods":
            changed = [
                m
                for m in new["methods"]
                if m in old.get("methods", {}) and old["methods"][m] != new["methods"][m]
            ]
            if changed:
                raise MvlptError(
                    f"{store.location}: the config of method '{changed[0]}' differs from the stored study's, "
                    f"which would change its cells' identity; use --name NEW for a new study"
                )
        elif old.get(key) != new[key]:
            raise MvlptError(
                f"{store.location}: '{key}' differs from the stored study's "
                f"({old.get(key)!r} -> {new[key]!r}), which would change its cells' identity; "
                f"use --name NEW for a new study"
            )


def _check_choice_sizes(spec: StudySpec, meta: dict, location: str) -> None:
    """A multisource policy's k and the number of groups name no cell, but the stored cells of a
    policy were chosen with them: another value would mix two choices under one policy's name."""
    stored, now = meta.get("spec", {}), spec.to_dict()
    for section, key in (("multisource", "k"), ("groups", "n_groups")):
        old, new = stored.get(section, {}).get(key), now.get(section, {}).get(key)
        if old is not None and new is not None and old != new:
            raise MvlptError(
                f"{location}: '{section}.{key}' differs from the stored study's ({old} -> {new}), which "
                f"would mix cells chosen both ways under one policy; use --name NEW for a new study"
            )


def write_meta(
    spec: StudySpec,
    store: Store,
    grid_counts: Counter,
    source_text: str | None,
    backbone_id: str | None = None,
    *,
    cell_ids=(),
    weights: str | None = None,
) -> None:
    """Record the study in `_study.json`: its spec and identity, its grid's counts, the ids of every
    cell it has planned (a row under another id is not one of its cells), the weights it runs with."""
    meta = store.meta() or {}
    if backbone_id is not None:
        meta["backbone_identity"] = backbone_id
    if weights is not None:
        from study.guard import WEIGHTS_KEY

        meta[WEIGHTS_KEY] = weights
    if cell_ids:  # a folder written before the list: its stored cells were planned by their launches
        known = meta["cell_ids"] if "cell_ids" in meta else store.status_of()
        meta["cell_ids"] = sorted({*known, *cell_ids})
    identity = _identity(spec)
    if meta.get("identity"):  # keep configs of methods this launch leaves out
        identity["methods"] = {**meta["identity"].get("methods", {}), **identity["methods"]}
    meta.update(
        name=spec.name,
        protocol=IDENTITY_VERSION,
        spec=spec.to_dict(),
        spec_hash=spec.digest(),
        identity=identity,
        updated_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        grid={f"{stage}/{method}": n for (stage, method), n in sorted(grid_counts.items())},
    )
    meta.setdefault("created_at", meta["updated_at"])
    store.write_text(SPEC_JSON, json.dumps(meta, indent=2, sort_keys=True))
    if source_text is not None:
        store.write_text(SPEC_TOML, source_text)


def spec_of_folder(folder: str) -> StudySpec:
    folder = local_location(folder)
    store = Store(folder)
    meta = store.meta()
    if meta is None:
        raise MvlptError(f"not a study folder (no {SPEC_JSON}): {folder}")
    if not isinstance(meta.get("spec"), dict):
        raise MvlptError(f"{folder}/{SPEC_JSON} holds no study spec; it cannot be resumed from the folder")
    data = dict(meta["spec"])
    data["out"] = str(Path(folder).parent) if "://" not in folder else folder.rsplit("/", 1)[0]
    return spec_from_dict(data, where=f"{folder}/{SPEC_JSON}")


def status_table(folder: str) -> str:
    """Counts per stage, method and status, read from the store alone (no torch, no ray)."""
    store = Store(folder)
    meta = store.meta()
    if meta is None:
        raise MvlptError(f"not a study folder (no {SPEC_JSON}): {folder}")
    table = store.read(["stage", "method", "status", "moved"])
    counts = Counter(zip(*(table.column(c).to_pylist() for c in ("stage", "method", "status")), strict=True))
    # tuned cells whose kept prompt is the untuned one (their result equals their start's)
    columns = (table.column(c).to_pylist() for c in ("stage", "method", "moved"))
    kept = Counter((stage, method) for stage, method, moved in zip(*columns, strict=True) if moved is False)
    lines = [
        f"study {meta['name']} in {folder}",
        f"{'stage':<11} {'method':<9} {'ok':>6} {'failed':>7} {'total':>7} {'kept start':>11}",
    ]
    grid = meta.get("grid", {})
    keys = sorted(
        {tuple(k.split("/")) for k in grid} | {(s, m) for s, m, _ in counts},
        key=lambda k: (STAGE_RANK.get(k[0], len(STAGE_RANK)), k[1]),
    )
    for stage, method in keys:
        ok, failed = counts[(stage, method, "ok")], counts[(stage, method, "failed")]
        total = grid.get(f"{stage}/{method}", ok + failed)
        lines.append(f"{stage:<11} {method:<9} {ok:>6} {failed:>7} {total:>7} {kept[(stage, method)]:>11}")
    ok_all = sum(v for (_, _, s), v in counts.items() if s == "ok")
    failed_all = sum(counts.values()) - ok_all
    lines.append(f"{'all':<21} {ok_all:>6} {failed_all:>7} {sum(grid.values()):>7} {sum(kept.values()):>11}")
    if store.skipped:
        named = ", ".join(f"{s.name} ({s.reason})" for s in store.skipped)
        lines.append(f"skipped {len(store.skipped)} file(s) that are not cells of this study: {named}")
    return "\n".join(lines)


@dataclass(frozen=True)
class Launch:
    """What a launch found and did: where, the plan, and the status of every planned cell."""

    location: str
    plan: Plan
    counts: Counter  # 'ok', 'failed', 'missing' over the planned cells

    @property
    def unfinished(self) -> int:
        return sum(self.counts.get(k, 0) for k in ("failed", "missing", "pending"))


def study_location(spec: StudySpec, folder: str | None = None) -> str:
    """The study's folder: `folder` when given (a resumed copy), else the spec's out/name."""
    location = local_location(f"{spec.out.rstrip('/')}/{spec.name}" if folder is None else folder)
    if "://" not in location:  # trials run in their own working folders: pass them an absolute path
        location = os.path.abspath(location)
    return location


def plan_study(spec: StudySpec, folder: str | None = None) -> tuple[Store, Plan, str]:
    """Check the folder (by default the spec's) against the spec and plan the grid.
    -> (store, plan, backbone identity)."""
    from pipeline.backbones import backbone_identity, parse_backbone
    from study.guard import check_out, check_own_files

    location = study_location(spec, folder)
    check_out(location)
    store = Store(location)
    check_own_files(store)
    backbone_id = backbone_identity(parse_backbone(spec.backbone))
    check_folder(spec, store, backbone_id)
    return store, replan(spec, store), backbone_id


def replan(spec: StudySpec, store: Store) -> Plan:
    """The study's plan from what its folder holds now: the multisource and groups cells whose sets
    the stored results can choose (study.choose), the others pending."""
    from study.choose import gather
    from study.grid import expand
    from study.plan import build_plan

    evidence = gather(spec, store) if {"multisource", "groups"} & set(spec.stages) else None
    return build_plan(expand(spec, evidence), store.done())


def feature_cache_dir() -> str:
    """Where trials keep frozen features by default: beside the built-in backbone's checkpoint."""
    from pipeline.pretrain import cache_dir

    return str(cache_dir() / "features")


def dry_run_table(
    spec: StudySpec, folder: str | None = None, address: str | None = None, num_cpus: int | None = None
) -> str:
    """The grid's counts per stage and method, what is done and what is left; runs nothing. A new
    folder needs no cell identities (so no data or weights): nothing in it is done."""
    from pipeline.backbones import parse_backbone
    from study.grid import expand
    from study.guard import check_out, check_own_files, check_resources

    check_resources(dataclasses.asdict(spec.resources), address, num_cpus)  # a study that cannot run
    store = Store(study_location(spec, folder))
    check_out(store.location)  # what `run` refuses, the dry run refuses too
    check_own_files(store)
    parse_backbone(spec.backbone)
    pending = Counter()
    if store.cell_files():
        _, plan, _ = plan_study(spec, folder)
        cells, done, pending = plan.cells, plan.done_per(), plan.pending
    else:
        from pipeline.data import resolve_task
        from pipeline.data.tasks import ELEVATER

        check_folder(spec, store)
        for task in spec.tasks:  # a misspelt task is named; a roster task's data may come later
            if task not in ELEVATER:
                resolve_task(task)
        grid = expand(spec)
        cells, done, pending = list(grid.cells), Counter(), grid.pending
    counts = Counter((c.stage, c.method) for c in cells) + pending
    lines = [
        f"study {spec.name} -> {store.location}: {len(cells) + sum(pending.values())} cells",
        f"{'stage':<11} {'method':<9} {'cells':>7} {'done':>7} {'to run':>7}",
    ]
    for (stage, method), n in sorted(counts.items(), key=lambda kv: (STAGE_RANK[kv[0][0]], kv[0][1])):
        finished = done[(stage, method)]
        lines.append(f"{stage:<11} {method:<9} {n:>7} {finished:>7} {n - finished:>7}")
    if pending:
        lines.append(
            f"{sum(pending.values())} multisource and groups cells are chosen from results not stored yet "
            f"(similarities, validation gains); the multitask cells they start from are counted once chosen"
        )
    from study.estimate import estimate_lines

    lines += estimate_lines(spec, store, counts, done, pending, address, num_cpus, feature_cache_dir())
    return "\n".join(lines)


def launch(
    spec: StudySpec,
    *,
    folder: str | None = None,
    source_text: str | None = None,
    address: str | None = None,
    num_cpus: int | None = None,
    cache_dir: str | None = None,
    show_progress: bool = True,
) -> Launch:
    """Run a study: check its folder, write its metadata and embeddings, plan its cells, run what
    is not done, then store the learned prompts' embeddings. `folder`: the study's folder when it is
    not the spec's (a resumed copy)."""
    from study.embed import embeddings_sound, write_embeddings
    from study.guard import check_resources, launch_weights, lock_folder

    store, plan, backbone_id = plan_study(spec, folder)
    check_resources(dataclasses.asdict(spec.resources), address, num_cpus)
    weights = launch_weights(spec, store)  # loads the backbone: nothing is written before it loads
    lock_folder(store)
    store.create()
    ids = plan.ids.values()
    write_meta(spec, store, plan.grid_counts(), source_text, backbone_id, cell_ids=ids, weights=weights)
    cache_dir = cache_dir or feature_cache_dir()
    if plan.finished:
        if not embeddings_sound(store):
            write_embeddings(spec, store, cache_dir)
        return Launch(store.location, plan, plan.counts(store.status_of()))
    if not embeddings_sound(store):
        # before any cell, so a study stopped part-way can still be reported on, and before the
        # plan's choices that read similarities; this also builds (pre-trains) the backbone once
        # here rather than in every worker at the same time
        write_embeddings(spec, store, cache_dir, prompts=False)
        plan = replan(spec, store)
        write_meta(spec, store, plan.grid_counts(), None, backbone_id, cell_ids=plan.ids.values())
    from study.schedule import run_plan

    tried: set[str] = set()  # a cell that fails is retried by the next launch, not by the next round
    while todo := plan.todo(frozenset(tried)):
        run_plan(
            plan,
            spec.name,
            store.location,
            dataclasses.asdict(spec.resources),
            skip=frozenset(tried),
            address=address,
            num_cpus=num_cpus,
            cache_dir=cache_dir,
            show_progress=show_progress,
        )
        tried |= {plan.ids[c] for c in todo}
        # the finished cells may choose the sets of pending ones: plan again, run what is new
        plan = replan(spec, store) if plan.pending else plan
        write_meta(spec, store, plan.grid_counts(), None, backbone_id, cell_ids=plan.ids.values())
    write_embeddings(spec, store, cache_dir)  # now with the learned prompts of the single cells
    return Launch(store.location, plan, plan.counts(store.status_of()))
