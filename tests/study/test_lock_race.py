"""Three launches taking over a dead holder's lock at the same moment: exactly one holds the folder."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

# one racer: for every "trial start" read on stdin, wait for the start (the monotonic clock is the
# machine's, the same in every process), try to take that trial's folder, say how it went
RACER = """
import sys, time
from pipeline.errors import MvlptError
from study.guard import lock_folder
from study.store import Store

for line in sys.stdin:
    trial, start = line.split()
    store = Store(f"{sys.argv[1]}/{trial}")
    while time.monotonic() < float(start):
        pass
    try:
        lock_folder(store)
        print("took", flush=True)
    except MvlptError:
        print("refused", flush=True)
"""
TRIALS, RACERS = 200, 3
pytestmark = pytest.mark.slow  # about 9 s on two cores: 200 trials of three processes


def test_three_processes_taking_over_a_dead_lock_at_once_never_both_hold_it(tmp_path):
    from study.guard import LOCK

    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = {"host": socket.gethostname(), "pid": int(gone.stdout), "since": "then"}
    for k in range(TRIALS):
        (tmp_path / str(k)).mkdir()
        (tmp_path / str(k) / LOCK).write_text(json.dumps(dead))
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(tmp_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(RACERS)
    ]
    try:
        took = []
        for k in range(TRIALS):
            start = time.monotonic() + 0.01
            for r in racers:  # all three start the trial at the same moment...
                r.stdin.write(f"{k} {start}\n")
                r.stdin.flush()
            answers = [r.stdout.readline().strip() for r in racers]  # ...and each says how it went
            took.append([r.pid for r, a in zip(racers, answers, strict=True) if a == "took"])
            assert all(a in ("took", "refused") for a in answers), answers
        two = [k for k, pids in enumerate(took) if len(pids) != 1]
        assert not two, f"{len(two)} of {TRIALS} trials did not end with one holder: {took[two[0]]}"
        for k, (pid,) in enumerate(took):  # the lock names the one process that holds it
            assert json.loads((tmp_path / str(k) / LOCK).read_text())["pid"] == pid
    finally:
        for r in racers:
            r.stdin.close()
            r.wait(timeout=60)
