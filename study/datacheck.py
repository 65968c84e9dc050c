"""`mvlpt data check`: whether every task's data can serve a study's grid, all problems at once."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.errors import MvlptError


@dataclass(frozen=True)
class DataCheck:
    """Every task's data as found (pipeline.data.check.TaskData) and the study's largest K."""

    found: tuple
    shots: int

    def problems(self) -> list[str]:
        """One line per problem, each naming its task: the data's own, then classes short of K."""
        lines = []
        for t in self.found:
            lines += [f"{t.task}: {p}" for p in t.problems]
            train = t.per_class.get("train")
            if train is not None:
                lines += [
                    f"{t.task}: class '{c}' has {n} training image{'s' if n > 1 else ''}, "
                    f"fewer than {self.shots} shots"
                    for c, n in zip(t.classes, train, strict=True)
                    if 0 < n < self.shots
                ]
        return lines

    def table(self) -> str:
        """One row per task: its data's kind, classes, images per split, the fewest training images
        of a class, whether every class has K shots, and where the data are."""
        head = f"{'task':<22} {'data':<11} {'classes':>7} {'train':>7} {'test':>7} {'fewest':>6}"
        lines = [f"{head} {self.shots:>3} shots  where"]
        for t in self.found:
            train = t.per_class.get("train")
            fewest = int(train.min()) if train is not None and len(train) else None
            enough = "ok" if fewest is not None and fewest >= self.shots and not t.problems else "NO"
            kind, _, where = t.where.partition(" ")
            name = t.task.rpartition("#")[2] if "#" in t.task else t.task.rstrip("/").rsplit("/", 1)[-1]
            train_n, test_n = _n(t.images("train")), _n(t.images("test"))
            row = f"{name[:22]:<22} {kind:<11} {len(t.classes):>7} {train_n:>7} {test_n:>7} {_n(fewest):>6}"
            lines.append(f"{row} {enough:>9}  {where}".rstrip())
        return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def check_data(tasks, shots) -> DataCheck:
    """Inspect each task's data (no model, no Ray) for a grid whose largest K is max(shots)."""
    from pipeline.data.check import inspect_task

    return DataCheck(tuple(inspect_task(t) for t in tasks), max(shots))


def require_data(spec) -> None:
    """Before a launch: every task's data can serve the grid, else one error naming every problem."""
    problems = check_data(spec.tasks, spec.shots).problems()
    if problems:
        listed = "\n".join(f"  {p}" for p in problems)
        raise MvlptError(
            f"the data cannot serve study '{spec.name}' ({len(problems)} problems; `mvlpt data check` "
            f"shows each task's data):\n{listed}"
        )
