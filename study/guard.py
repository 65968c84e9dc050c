"""Preconditions of a launch: where a study may go, who holds its folder, what it asks, which weights."""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import json
import logging
import os
import socket
from pathlib import Path

from pipeline.errors import MvlptError
from study.store import PROMPTS, SPEC_JSON, SPEC_TOML, Store

log = logging.getLogger(__name__)

LOCK = "_study.lock"
# the metadata key of the built-in backbone's weights (sha256 of its checkpoint) a study ran with
WEIGHTS_KEY = "weights_sha256"


def check_out(location: str) -> None:
    """Refuse a study folder inside another study's folder: pyarrow reads a folder recursively, so
    the outer study's table would take in the inner one's rows."""
    if "://" in location:
        return
    path = Path(location).resolve()
    for parent in path.parents:
        if (parent / SPEC_JSON).is_file():
            raise MvlptError(
                f"{path} is inside the study folder {parent}, whose table would then hold both "
                f"studies' rows; choose an --out outside it"
            )


def check_own_files(store: Store) -> None:
    """Refuse a study folder whose own files or folders are links (a write through one lands
    outside the folder) or of the wrong kind (a folder where the study keeps a file, a folder named
    like a cell): a launch would stop half-way, after changing the folder."""
    from analysis.load import TABLES_DIR

    kinds = dict(store.entries())
    expected = {PROMPTS: "dir", TABLES_DIR: "dir", SPEC_JSON: "file", SPEC_TOML: "file", LOCK: "file"}
    wrong = [n for n, kind in expected.items() if kinds.get(n, kind) not in (kind, "link")]
    if wrong:
        what = "folder" if expected[wrong[0]] == "dir" else "file"
        raise MvlptError(
            f"{store.location}: '{wrong[0]}' is not a {what}, and the study keeps a {what} there"
        )
    links = store.links()
    if links:
        raise MvlptError(
            f"{store.location}: '{links[0]}' is a link or a special file, and a study's own files and "
            f"folders are plain ones; replace it with a copy of what it points to"
        )
    odd = store.odd_cells()
    if odd:
        raise MvlptError(
            f"{store.location}: '{odd[0].name}' is {odd[0].reason}; move it out of the study folder"
        )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return holder if isinstance(holder, dict) else None


_HELD: dict[Path, int] = {}  # lock path -> the open descriptor whose flock holds it


def _take(path: Path) -> int | None:
    """An open descriptor of `path` holding its exclusive flock, or None while another process holds
    it. The kernel drops a dead process's flock, so taking a dead holder's lock is atomic; a lock file
    replaced or removed while we waited for it is opened again (its old flock guards nothing)."""
    import fcntl

    for _ in range(100):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise MvlptError(f"could not take the lock {path}: another launch keeps replacing it")


def _refuse(folder: Path, path: Path, holder: dict | None, host: str) -> MvlptError:
    if holder is None or holder.get("host") != host or not isinstance(holder.get("pid"), int):
        who = f"{holder.get('host')} pid {holder.get('pid')}" if holder else "an unreadable lock"
        return MvlptError(f"{folder} is in use by {who} ({path}); if that process is gone, delete the file")
    return MvlptError(
        f"{folder} is in use by pid {holder['pid']} on this host since {holder.get('since')}; "
        f"wait for it or stop it"
    )


def lock_folder(store: Store) -> None:
    """Take the study folder for this process until it exits (`_study.lock`, naming host and pid,
    held by an flock). A second launch on the folder fails in one line naming the holder; the lock
    of a process that died on this host is taken over with a message. Folders at a filesystem URI
    are not locked."""
    if "://" in store.location:
        return
    folder = Path(store.root)
    path = folder / LOCK
    if path in _HELD:
        return
    folder.mkdir(parents=True, exist_ok=True)
    host, pid = socket.gethostname(), os.getpid()
    try:
        fd = _take(path)
    except OSError as err:  # a link (O_NOFOLLOW), a folder, no permission
        raise MvlptError(f"cannot take the lock {path}: {err.strerror or err}") from None
    if fd is None:
        raise _refuse(folder, path, _holder(path), host)
    with os.fdopen(os.dup(fd), "r+") as f:
        text = f.read()
        holder = _holder(path) if text.strip() else {}
        # another host's lock, an unreadable one, or a live process that holds no flock (an older
        # version of mvlpt): not ours to take
        if holder is None or holder and (
            holder.get("host") != host or not isinstance(holder.get("pid"), int)
            or (holder["pid"] != pid and _alive(holder["pid"]))
        ):  # fmt: skip
            os.close(fd)
            raise _refuse(folder, path, holder, host)
        if holder:
            log.warning(
                "took over the lock of %s from pid %s, which is no longer running", folder, holder["pid"]
            )
        f.seek(0)
        f.truncate()
        json.dump(
            {"host": host, "pid": pid, "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}, f
        )
        f.flush()
    _HELD[path] = fd
    atexit.register(_release, path, pid)


def _release(path: Path, pid: int) -> None:
    """Remove the lock while still holding its flock (a waiter that opened it sees it replaced), then
    drop the flock."""
    holder = _holder(path)
    if holder is not None and holder.get("pid") == pid and holder.get("host") == socket.gethostname():
        with contextlib.suppress(OSError):
            path.unlink()
    fd = _HELD.pop(path, None)
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)


def local_gpus() -> int:
    """GPUs this machine has (torch's count, 0 without CUDA)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_resources(resources: dict, address: str | None, num_cpus: int | None) -> None:
    """Fail before Ray starts when one trial asks for more than the local node has: Ray would keep
    the trial pending forever. (On a cluster the nodes are only known once joined.)"""
    if address:
        return
    cpus = num_cpus if num_cpus is not None else os.cpu_count() or 1
    cpu, gpu = float(resources.get("cpu", 1.0)), float(resources.get("gpu", 0.0))
    if cpu > cpus:
        raise MvlptError(
            f"each trial asks for {cpu:g} CPUs, more than this machine's {cpus}: "
            f"lower [resources] cpu in the spec or pass --cpus"
        )
    if gpu > 1:  # a fraction or one GPU falls back to CPU where there is none
        have = local_gpus()
        if have and gpu > have:
            raise MvlptError(f"each trial asks for {gpu:g} GPUs, more than this machine's {have}")


def weights_digest(backbone: str) -> str | None:
    """sha256 of the built-in backbone's checkpoint in this node's cache (trained now if absent);
    None for a backbone whose identity already names its weights (a tag, a file, the random test model)."""
    from pipeline.backbones import file_sha256, parse_backbone

    if not parse_backbone(backbone).pretrained_here:
        return None
    from pipeline.pretrain import pretrained_checkpoint

    return file_sha256(pretrained_checkpoint())


def launch_weights(spec, store: Store) -> str | None:
    """Before a launch writes anything: load the backbone (a damaged checkpoint stops it here) and
    return the built-in backbone's weights digest to record, refusing other weights than those the
    study ran with. None for a backbone whose identity names its weights."""
    from pipeline.backbones import load_backbone

    load_backbone(spec.backbone, "cpu")  # once per process: the embeddings reuse it
    digest = weights_digest(spec.backbone)
    meta = store.meta() or {}
    if digest is not None and meta.get(WEIGHTS_KEY) not in (None, digest):
        _weights_mismatch(digest, meta[WEIGHTS_KEY], store)
    return digest


def _weights_mismatch(digest: str, recorded: str, store: Store):
    from pipeline.pretrain import checkpoint_path

    raise MvlptError(
        f"weights mismatch: the built-in backbone here ({checkpoint_path()}, sha256 {digest[:12]}) is "
        f"not the one {store.location} ran with ({recorded[:12]}); copy that checkpoint into this "
        f"cache or use --name NEW"
    )


def record_weights(spec, store: Store) -> None:
    """Record the built-in backbone's weights in the study's metadata at launch, or refuse to go on
    with other weights than those it ran with: pre-training is not bitwise equal across machines."""
    digest = weights_digest(spec.backbone)
    if digest is None:
        return
    meta = store.meta() or {}
    recorded = meta.get(WEIGHTS_KEY)
    if recorded is None:
        meta[WEIGHTS_KEY] = digest
        store.write_text(SPEC_JSON, json.dumps(meta, indent=2, sort_keys=True))
    elif recorded != digest:
        _weights_mismatch(digest, recorded, store)


def check_weights(store: Store, backbone: str) -> None:
    """On a worker, before a cell's row is stored: the weights it was computed with must be those
    recorded in the study, else the row is refused as a 'weights mismatch'."""
    from pipeline.backbones import parse_backbone

    if not parse_backbone(backbone).pretrained_here:
        return
    meta = store.meta() or {}
    recorded = meta.get(WEIGHTS_KEY)
    if recorded is None:
        return
    from pipeline.backbones import file_sha256
    from pipeline.pretrain import checkpoint_path

    here = file_sha256(checkpoint_path())
    if here != recorded:
        raise MvlptError(
            f"weights mismatch: node {socket.gethostname()} computed it with built-in weights "
            f"{here[:12]}, the study ran with {recorded[:12]}"
        )
