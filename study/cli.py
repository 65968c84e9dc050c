"""The `mvlpt` command line: one parser, one function per subcommand, heavy imports inside them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys

log = logging.getLogger("mvlpt")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming what is wrong."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _config_value(text: str):
    """KEY=VALUE values: JSON where it parses (numbers, true/false, null), else the plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(pairs: list[str], flag: str) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"mvlpt: error: {flag} expects KEY=VALUE, got '{pair}'")
        out[key.strip()] = _config_value(value)
    return out


def _seeds(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from err


def _json_safe(row: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _task_list(text: str, flag: str) -> tuple[str, ...]:
    """The tasks of `--sources`/`--group` a,b,c: none empty, none named twice."""
    from pipeline.errors import MvlptError
    from study.spec import task_key

    tasks = tuple(t.strip() for t in text.split(","))
    if not all(tasks):
        raise MvlptError(f"{flag}: empty task name in '{text}' (expected a,b,c)")
    keys = [task_key(t) for t in tasks]
    twice = next((t for k, t in zip(keys, tasks, strict=True) if keys.count(k) > 1), None)
    if twice is not None:
        raise MvlptError(f"{flag} names the task '{twice}' twice in '{text}'")
    return tasks


def _task_set(args) -> tuple[str | None, tuple[str, ...]]:
    """(stage, tasks) of `mvlpt cell --sources` (multisource) or `--group` (groups); else (None, ())."""
    from pipeline.errors import MvlptError

    if args.sources is not None and args.group is not None:
        raise MvlptError("--sources (a multisource cell) and --group (a groups cell) exclude each other")
    if args.sources is not None:
        return "multisource", _task_list(args.sources, "--sources")
    if args.group is not None:
        return "groups", _task_list(args.group, "--group")
    if args.policy is not None:
        raise MvlptError("--policy labels the task set of --sources or --group; give one of them")
    return None, ()


def cmd_cell(args) -> int:
    """Run one cell and print its result."""
    from pipeline.cell import make_cell
    from pipeline.methods import save_state
    from pipeline.recipe import Recipe
    from pipeline.run import Context, run

    recipe_overrides = {
        "epochs": args.epochs,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "precision": args.precision,
    }
    recipe = dataclasses.replace(Recipe(), **{k: v for k, v in recipe_overrides.items() if v is not None})
    stage, tasks = _task_set(args)
    cell = make_cell(
        args.method,
        args.target,
        source=args.source,
        mode=args.mode,
        stage=stage,
        tasks=tasks,
        policy=(args.policy or "given") if tasks else None,
        method_config=_key_values(args.config, "--config"),
        recipe=recipe,
        backbone=args.backbone,
        shots=args.shots,
        seed=args.seed,
        source_seeds=args.source_seeds or (),
        metric=args.metric,
        label_space=args.label_space,
        joint_sampling=args.joint_sampling,
    )
    context = Context(
        device=args.device,
        feature_cache=not args.no_feature_cache,
        cache_dir=args.cache_dir,
        workers=args.workers,
    )
    source_state = args.source_state
    if source_state is not None and cell.mode != "init" and not tasks:
        raise SystemExit("mvlpt: error: --source-state applies to --mode init, --sources and --group only")
    result = run(cell, source_state=source_state, context=context)
    if args.save_state:
        save_state(result.prompt_state, args.save_state)
    if args.json:
        print(json.dumps(_json_safe(result.row())))
    else:
        where = f"{cell.source} -> {cell.target} ({cell.mode})" if cell.source else cell.target
        if tasks:
            where = f"{result.source} -> {cell.target} ({cell.policy})"
        print(
            f"{cell.method} {cell.stage} {where}: {result.metric} = {result.value:.4f} "
            f"[{result.shots} shots, seed {cell.seed}, best epoch {result.best_epoch}, "
            f"{result.wall_s:.2f} s, cell {result.cell_id}]"
        )
    return 0


def cmd_tasks(args) -> int:
    """List the built-in suite's tasks, then the ELEVATER roster and whether its data is present."""
    from pipeline.data.manifest import roster_in_registry
    from pipeline.data.suite import SUITE
    from pipeline.data.tasks import ELEVATER, data_root

    root = data_root()
    in_registry = roster_in_registry(root)
    rows = [
        {
            "name": name,
            "num_classes": len(t.classnames),
            "metric": t.metric,
            "domain": t.domain,
            "suite": "builtin",
        }
        for name, t in SUITE.items()
    ]
    rows += [
        {
            "name": name,
            "num_classes": n,
            "metric": metric,
            "domain": "elevater",
            "suite": "elevater",
            "data": "found" if (root / name).is_dir() or name in in_registry else f"missing ({root / name})",
        }
        for name, (metric, n) in ELEVATER.items()
    ]
    if args.json:
        print(json.dumps(rows))
        return 0
    for suite, title in (
        ("builtin", "built-in suite (generated, no download)"),
        ("elevater", f"ELEVATER roster (data under {root}, set MVLPT_DATA)"),
    ):
        print(title)
        print(f"  {'name':<20} {'classes':>7}  {'metric':<15} {'domain' if suite == 'builtin' else 'data'}")
        for r in (r for r in rows if r["suite"] == suite):
            last = r["domain"] if suite == "builtin" else r["data"].split(" ")[0]
            print(f"  {r['name']:<20} {r['num_classes']:>7}  {r['metric']:<15} {last}")
    return 0


def cmd_pretrain(args) -> int:
    """Pre-train the built-in backbone on the built-in suite (or find it in the cache)."""
    import time

    from pipeline.pretrain import checkpoint_path, pretrained_checkpoint

    cached = checkpoint_path().is_file()
    start = time.perf_counter()
    path = pretrained_checkpoint()
    how = "found in the cache" if cached else f"pre-trained in {time.perf_counter() - start:.0f} s"
    print(f"built-in backbone {how}: {path}")
    return 0


def _csv(kind):
    def parse(text: str):
        try:
            return tuple(kind(s.strip()) for s in text.split(",") if s.strip())
        except ValueError as err:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated {kind.__name__} values, got '{text}'"
            ) from err

    return parse


def _launch(spec, args, source_text: str | None) -> int:
    from study.launch import dry_run_table, launch

    if args.dry_run:
        print(dry_run_table(spec, getattr(args, "dir", None), args.address, args.cpus))
        return 0
    done = launch(
        spec,
        folder=getattr(args, "dir", None),  # resume works on the folder it is given, renamed or copied
        source_text=source_text,
        address=args.address,
        num_cpus=args.cpus,
        cache_dir=args.cache_dir,
        show_progress=not args.quiet,
    )
    ok, failed, pending = (done.counts.get(k, 0) for k in ("ok", "failed", "pending"))
    total = len(done.plan.cells) + pending
    waiting = f", {pending} not chosen yet (their choice reads failed cells)" if pending else ""
    print(f"study {spec.name}: {ok} of {total} cells done, {failed} failed{waiting} -> {done.location}")
    if done.unfinished:
        print(
            f"mvlpt: error: {done.unfinished} cells failed or did not run; "
            f"`mvlpt resume {done.location}` retries them",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_run(args) -> int:
    """Run a study spec (default: the built-in default study), skipping cells already stored."""
    path, spec, shrunk = _spec_of_command(args)
    if shrunk:
        print(
            f"study {spec.name}: on {len(spec.tasks)} tasks, shrunk {', '.join(shrunk)} (the most they allow)"
        )
    if not args.dry_run:
        from study.datacheck import require_data

        require_data(spec)  # every data problem of every task, before Ray starts
    return _launch(spec, args, path.read_text())


def _spec_of_command(args):
    """The spec a command names (SPEC, KEY=VALUE overrides, flags) and the sizes it shrank."""
    from study.launch import SPECS_DIR, resolve_spec_path
    from study.overrides import command_line_spec

    pairs = list(args.overrides)
    if args.spec is not None and "=" in args.spec and not os.path.exists(args.spec):
        pairs.insert(0, args.spec)  # `mvlpt run noise.pairs=2`: the default spec with an override
        args.spec = None
    path = resolve_spec_path(args.spec)
    keys = ("methods", "tasks", "seeds", "shots", "epochs", "mode", "name", "out")
    spec, shrunk = command_line_spec(
        path, path.parent == SPECS_DIR, {k: getattr(args, k, None) for k in keys}, pairs
    )
    return path, spec, shrunk


def cmd_data_check(args) -> int:
    """Per task: where its data are, classes, images per split, whether every class has the
    largest K shots; then every problem in one line each. Exit 1 when there is any."""
    from study.datacheck import check_data

    _, spec, _ = _spec_of_command(args)
    check = check_data(spec.tasks, spec.shots)
    print(check.table())
    problems = check.problems()
    if problems:
        print(f"{len(problems)} problem{'s' if len(problems) > 1 else ''}:")
        print("\n".join(f"  {p}" for p in problems))
        return 1
    print(f"the data of all {len(spec.tasks)} tasks can serve {spec.name}'s grid")
    return 0


def cmd_resume(args) -> int:
    """Run what is missing or failed in a study folder, from the folder alone."""
    from study.launch import spec_of_folder

    return _launch(spec_of_folder(args.dir), args, None)


def cmd_status(args) -> int:
    """Counts per stage, method and status of a study folder."""
    from study.launch import status_table

    print(status_table(args.dir))
    return 0


def cmd_report(args) -> int:
    """Write the HTML report of a study folder (figures, tables) and print its summary."""
    from analysis.report import ReportError, make_report
    from pipeline.errors import MvlptError
    from study.store import Store

    Store(args.dir).meta()  # its metadata's types, checked as every command checks them
    try:
        report = make_report(args.dir, out=args.out, n_boot=args.boot)
    except ReportError as err:  # analysis cannot import pipeline: its input errors become ours here
        raise MvlptError(str(err)) from err
    print(report.text)
    print(f"report written to {report.html} ({len(report.figures)} figures, tables in {report.out})")
    return 0


def _scheduling_flags(p) -> None:
    p.add_argument(
        "--dry-run", action="store_true", help="print the cell counts and what is done, run nothing"
    )
    p.add_argument("--address", help="join this Ray cluster (default: start a local one)")
    p.add_argument("--cpus", type=int, help="CPUs for the local Ray instance (default: all)")
    p.add_argument(
        "--cache-dir",
        help="frozen-feature cache shared by the trials (default: features/ in the backbone cache)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from pipeline.cell import JOINT_SAMPLINGS, LABEL_SPACES, MODES

    parser = _Parser(
        prog="mvlpt", description="Task-transferability studies of vision-language prompt tuning."
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("-v", "--verbose", action="store_true", help="info-level logs")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    cell = sub.add_parser("cell", help="run one cell (single, transfer or zero-shot) and print its result")
    cell.add_argument("--method", required=True, help="zeroshot, coop, vpt or upt")
    cell.add_argument("--target", required=True, help="registry task name or image-folder path")
    cell.add_argument("--source", help="source task for a transfer cell")
    cell.add_argument("--mode", choices=MODES, help="transfer mode")
    cell.add_argument(
        "--metric", help="override the target's metric (accuracy, mean_per_class, map11, roc_auc)"
    )
    cell.add_argument("--seed", type=int, default=0)
    cell.add_argument("--shots", type=int, default=5)
    cell.add_argument("--epochs", type=int, help="default: the recipe's (200)")
    cell.add_argument("--lr", type=float)
    cell.add_argument("--batch-size", type=int)
    cell.add_argument("--precision", help="auto, fp32, bf16 or fp16")
    cell.add_argument(
        "--backbone", default="builtin", help="builtin, tiny, ARCH:TAG (e.g. ViT-B-16:openai) or ARCH:PATH"
    )
    cell.add_argument("--config", action="append", metavar="KEY=VALUE", help="method option, repeatable")
    cell.add_argument(
        "--source-seeds", type=_seeds, help="init mode: average the source prompt over these seeds"
    )
    cell.add_argument(
        "--label-space",
        choices=LABEL_SPACES,
        help="joint mode: softmax over the image's own task's classes (per_task, default) or all (union)",
    )
    cell.add_argument(
        "--joint-sampling",
        choices=JOINT_SAMPLINGS,
        help="joint mode: the target's single-cell batches plus as many source images (paired, default), "
        "or one shuffled concatenation (concat)",
    )
    cell.add_argument(
        "--sources",
        help="a multisource cell: a prompt tuned on these tasks together (a,b,c) starts the target's",
    )
    cell.add_argument(
        "--group",
        help="a groups cell: the prompt tuned on this group (a,b,c) scored on the target",
    )
    cell.add_argument(
        "--policy", help="--sources/--group: the label of the rule that chose them (default: given)"
    )
    cell.add_argument(
        "--source-state",
        help="init mode, --sources, --group: a saved prompt state to start from instead of running its cells",
    )
    cell.add_argument("--save-state", metavar="PATH", help="save the learned prompt state here")
    cell.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    cell.add_argument("--no-feature-cache", action="store_true", help="re-encode images every step")
    cell.add_argument("--cache-dir", help="keep frozen image features here across processes")
    cell.add_argument("--workers", type=int, default=0, help="image-loading worker processes")
    cell.add_argument("--json", action="store_true", help="print the result as one JSON object")
    cell.set_defaults(func=cmd_cell)

    run = sub.add_parser("run", help="run a study (default: the built-in default study)")
    run.add_argument("spec", nargs="?", help="a TOML spec or a shipped spec name (default, elevater)")
    run.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="set any spec field, e.g. noise.pairs=2 multisource.k=2 recipe.lr=0.1 methods.coop.n_ctx=8",
    )
    run.add_argument("--methods", type=_csv(str), help="subset of the spec's methods, e.g. coop,vpt")
    run.add_argument("--tasks", type=_csv(str), help="tasks to use instead of the spec's")
    run.add_argument("--seeds", type=_csv(int), help="e.g. 0,1,2")
    run.add_argument("--shots", type=_csv(int), help="e.g. 5,20")
    run.add_argument("--epochs", type=int)
    run.add_argument("--mode", type=_csv(str), help="transfer modes: init, joint or init,joint")
    run.add_argument("--name", help="study name (its folder under --out)")
    run.add_argument("--out", help="parent folder or filesystem URI of the study folder")
    _scheduling_flags(run)
    run.set_defaults(func=cmd_run)

    data = sub.add_parser("data", help="inspect the data of a study's tasks")
    data_sub = data.add_subparsers(dest="data_command", metavar="check", required=True, parser_class=_Parser)
    check = data_sub.add_parser("check", help="each task's data, and every problem that would stop a run")
    check.add_argument("spec", nargs="?", help="a TOML spec or a shipped spec name (default: default)")
    check.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="set any spec field")
    check.add_argument("--tasks", type=_csv(str), help="tasks to check instead of the spec's")
    check.add_argument("--shots", type=_csv(int), help="the shots to check for, e.g. 5,20")
    check.set_defaults(func=cmd_data_check)

    resume = sub.add_parser("resume", help="run what a study folder is missing")
    resume.add_argument("dir")
    _scheduling_flags(resume)
    resume.set_defaults(func=cmd_resume)

    status = sub.add_parser("status", help="cell counts of a study folder per stage, method and status")
    status.add_argument("dir")
    status.set_defaults(func=cmd_status)

    report = sub.add_parser("report", help="write the HTML report (heatmaps, similarities, statistics)")
    report.add_argument("dir", help="a study folder")
    report.add_argument("--out", help="where to write it (default: DIR/_report)")
    report.add_argument(
        "--boot", type=int, default=1000, metavar="N", help="bootstrap resamples of tasks (default 1000)"
    )
    report.set_defaults(func=cmd_report)

    tasks = sub.add_parser("tasks", help="list the built-in suite's tasks and the ELEVATER roster")
    tasks.add_argument("--json", action="store_true")
    tasks.set_defaults(func=cmd_tasks)

    pretrain = sub.add_parser("pretrain", help="pre-train (or find cached) the built-in backbone")
    pretrain.set_defaults(func=cmd_pretrain)
    return parser


def _quiet_stdout() -> None:
    """The reader of our output left (`mvlpt tasks | head -3`): that is not an error. What is still
    buffered goes to /dev/null, so that the interpreter's last flush at exit does not complain."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and hasattr(args, "overrides") and all("=" in r and not r.startswith("-") for r in rest):
        args.overrides = [*args.overrides, *rest]  # KEY=VALUE after a flag: argparse leaves them over
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command in ("run", "resume"):
        # Busy-waiting OpenMP threads of two torch processes on two cores slow both by 10-50x;
        # one process alone (cell, pretrain) runs its small ops 1.8x faster with them spinning.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    level = logging.DEBUG if args.debug else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from pipeline.errors import MvlptError

    try:
        return args.func(args)
    except MvlptError as err:
        print(f"mvlpt: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mvlpt: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _quiet_stdout()
        return 0
    except Exception as err:
        if args.debug:
            raise
        from pipeline.errors import first_line

        print(
            f"mvlpt: error: unexpected {type(err).__name__}: {first_line(err)} "
            "(rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


def console() -> None:
    """The `mvlpt` command. After a study ran, the interpreter's own teardown of torch, Ray and
    gRPC objects takes seconds and writes nothing (every cell is on disk, fsynced, by then): the
    exit handlers run (Ray's shutdown, the folder lock's release, logging), then the process ends."""
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _quiet_stdout()
    if "ray" in sys.modules:
        import atexit

        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
