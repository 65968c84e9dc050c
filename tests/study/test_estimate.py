"""The dry run's time estimate: from the folder's own finished cells, or from a calibration here."""

from __future__ import annotations

from study.cli import main

SPEC = """name = "s"
backbone = "tiny"
tasks = ["glyph-kinds", "sizes"]
shots = [2]
stages = ["zeroshot", "single"]
[methods.coop]
n_ctx = 2
[recipe]
epochs = 1
[resources]
cpu = 1
gpu = 0.5
"""


def _estimate(out: str) -> list[str]:
    return out[out.index("time estimate:") :].splitlines()


def test_a_new_study_is_estimated_from_a_calibration(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text(SPEC)
    assert main(["run", str(spec), "--out", str(tmp_path), "--dry-run", "--cpus", "2"]) == 0
    lines = _estimate(capsys.readouterr().out)
    assert lines[0].startswith(
        "time estimate: seconds per cell from a calibration on this machine (2 cells, "
    )
    assert lines[0].endswith("; 2 cells at a time")
    if "this machine has none" in lines[1]:  # a GPU spec on a CPU machine says so
        assert lines[1].startswith("the spec asks for 0.5 GPU per trial and this machine has none")
    rows = {tuple(line.split()[:2]): line.split() for line in lines if line.startswith("  ")}
    assert rows[("zeroshot", "zeroshot")][2] == "2" and rows[("single", "coop")][2] == "2"
    assert float(rows[("single", "coop")][3]) > 0 and lines[-1].startswith("total: about ")
    assert not (tmp_path / "s").exists()


def test_a_started_study_is_estimated_from_its_own_cells(tmp_path, capsys):
    from pipeline.cell import cell_id
    from study.grid import expand
    from study.launch import write_meta
    from study.spec import load_spec
    from study.store import Store

    spec_path = tmp_path / "s.toml"
    spec_path.write_text(SPEC)
    spec = load_spec(spec_path)
    store = Store(tmp_path / "s")
    store.create()
    write_meta(spec, store, expand(spec).counts(), None)
    cells = {c.stage: c for c in expand(spec).cells}  # one cell of each stage is done
    for stage, wall in (("zeroshot", 3.0), ("single", 7.0)):
        c = cells[stage]
        store.write_cell(
            {"study": "s", "cell_id": cell_id(c), "stage": stage, "method": c.method, "target": c.target,
             "status": "ok", "value": 0.5, "shots": 2, "seed": 0, "metric": "accuracy", "wall_s": wall}
        )  # fmt: skip
    assert main(["run", str(spec_path), "--out", str(tmp_path), "--dry-run", "--cpus", "1"]) == 0
    lines = _estimate(capsys.readouterr().out)
    assert lines[0] == "time estimate: seconds per cell from the folder's 2 finished cells; 1 cell at a time"
    rows = {tuple(line.split()[:2]): line.split() for line in lines if line.startswith("  ")}
    # its 3 s and its share of a trial's overhead (a trial runs up to 4 cells)
    assert rows[("zeroshot", "zeroshot")][2:4] == ["1", "3.06"]
    assert rows[("single", "coop")][2:4] == ["1", "7.06"]
