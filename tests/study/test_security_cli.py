"""What a study folder from elsewhere, or the network, cannot make `mvlpt` do: write outside the
folder through a link, inject markup through its name, or reach a local Ray instance."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from study.cli import main
from tests.study.test_report_cli import _study

HOSTILE = "<script>alert(1)</script> [x](javascript:alert(2)) | # *\n## injected"


def test_report_replaces_links_instead_of_following_them_and_escapes_the_name(capsys, tmp_path):
    folder = _study(tmp_path / "given", name=HOSTILE)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    report = folder / "_report"
    report.mkdir()
    for name in ("summary.md", "report.html", "summary.csv"):
        (report / name).symlink_to(victim)
    assert main(["report", str(folder), "--boot", "0"]) == 0
    capsys.readouterr()
    assert victim.read_text() == "keep me"
    for name in ("summary.md", "report.html", "summary.csv"):
        assert not (report / name).is_symlink() and (report / name).is_file()
    page = (report / "report.html").read_text()
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    md = (report / "summary.md").read_text().splitlines()
    assert md[0].startswith("# Study ") and md[1] == ""  # the name's newline started no heading
    text = "\n".join(md)
    assert "<script>" not in text and " [x](javascript:" not in text and "\n## injected" not in text
    assert "\\<script\\>" in text and "&lt;" not in text and "[x]\\(javascript" in text
    assert not [p for p in report.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_a_report_folder_that_is_a_link_is_refused_in_one_line(capsys, tmp_path):
    folder = _study(tmp_path / "given")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (folder / "_report").symlink_to(elsewhere, target_is_directory=True)
    assert main(["report", str(folder), "--boot", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("mvlpt: error:") and "symbolic link" in err, err
    assert list(elsewhere.iterdir()) == []


def _descendants(pid: int) -> set[int]:
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(entry.name)] = int(fields[1])
    found, grew = {pid}, True
    while grew:
        more = {p for p, pp in parent.items() if pp in found} - found
        found |= more
        grew = bool(more)
    return found


def _listening(pids: set[int]) -> list[str]:
    """The local addresses (hex, as /proc/net shows them) of TCP sockets these processes listen on."""
    inodes = set()
    for pid in pids:
        with_fd = Path(f"/proc/{pid}/fd")
        try:
            for fd in with_fd.iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                out.append(f[1].split(":")[0])
    return out


def _loopback(addr: str) -> bool:
    if len(addr) == 8:  # IPv4, little-endian: 127.x.x.x ends in 7F
        return addr.endswith("7F")
    words = [addr[i : i + 8] for i in range(0, 32, 8)]
    mapped = words[:3] == ["00000000", "00000000", "FFFF0000"] and words[3].endswith("7F")
    return mapped or addr == "00000000000000000000000001000000"  # ::1


def run_watching_sockets(
    cmd: list[str], env: dict, timeout: float = 600
) -> tuple[subprocess.CompletedProcess, set]:
    """Run `cmd`, noting the addresses every process it starts listens on while it runs."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        seen.update(_listening(_descendants(proc.pid)))
        time.sleep(0.2)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), seen


def check_local_ray(done: subprocess.CompletedProcess, listening: set, ray_address: str) -> None:
    """The run succeeded on a local instance whose servers listen on the loopback address only, and
    said in one line that the RAY_ADDRESS of its environment was not used."""
    assert done.returncode == 0, done.stderr[-2000:]
    assert listening, "no listening socket of the local Ray instance was seen"
    assert all(_loopback(a) for a in listening), sorted(listening)
    said = [line for line in done.stderr.splitlines() if "RAY_ADDRESS" in line]
    assert len(said) == 1 and ray_address in said[0] and "local" in said[0], done.stderr
