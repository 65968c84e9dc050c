"""Report files on disk and text in Markdown: written atomically, never through a link, escaped."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path


def write_atomic(path: Path, data: bytes | str) -> Path:
    """Write `data` to `path` through a fresh temporary name in the same folder, then rename it: the
    rename replaces a symlink at `path` instead of writing to where it points, and a reader never
    sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    payload = data.encode("utf-8") if isinstance(data, str) else data
    try:
        with open(tmp, "xb") as f:  # exclusive: never opens something already there
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


_MD_SPECIAL = re.compile(r"([\\`*_|#~<>&])")  # backslash-escaped: no HTML entity in the file


def markdown_text(value) -> str:
    """`value` as literal Markdown text on one line: no HTML, link, image, emphasis or table cell
    border can come out of it (a study or task name is whatever its folder says). Brackets stay as
    they are (intervals read "[lo, hi]"); a link needs "](" and gets "]\\(" instead."""
    text = "".join(c if c.isprintable() else " " for c in str(value))
    return _MD_SPECIAL.sub(r"\\\1", text).replace("](", "]\\(")
