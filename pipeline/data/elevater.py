"""The ELEVATER toolkit's facts about the paper's 20 tasks: dataset names, class names, templates."""

from __future__ import annotations

import functools
import json
from pathlib import Path

# roster name -> the dataset's name in the toolkit's registry (vision_datasets.json), where they differ
TOOLKIT_NAMES = {
    "eurosat": "eurosat_clip",
    "fgvc-aircraft": "fgvc-aircraft-2013b-variants102",
    "resisc45": "resisc45_clip",
    "voc-2007": "voc-2007-classification",
}
ROSTER_NAMES = {v: k for k, v in TOOLKIT_NAMES.items()}
PROMPTS_FILE = Path(__file__).with_name("elevater_prompts.json")


def toolkit_name(task: str) -> str:
    return TOOLKIT_NAMES.get(task, task)


def roster_name(dataset: str) -> str:
    """The roster task a toolkit dataset name stands for (itself where the names agree)."""
    return ROSTER_NAMES.get(dataset, dataset)


@functools.cache
def _prompts() -> dict:
    return json.loads(PROMPTS_FILE.read_text(encoding="utf-8"))


def classnames(task: str) -> tuple[str, ...] | None:
    """The names the toolkit gives a roster task's labels, in label order; None if it names none."""
    entry = _prompts().get(task, {})
    return tuple(entry["classes"]) if "classes" in entry else None


def templates(task: str) -> tuple[str, ...]:
    """The toolkit's zero-shot templates of a roster task ('{}' takes the class name); () if none."""
    return tuple(_prompts().get(task, {}).get("templates", ()))
