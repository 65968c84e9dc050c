"""The report end to end on tiny study folders: files, a self-contained page, numbers equal to the
designed gains, and bad or partial input said plainly instead of a traceback or an invented number."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from study_folders import (
    TASKS,
    VISUAL,
    cell,
    designed_rows,
    embedding_rows,
    full_study,
    gain_pts,
    toy_rows,
    write_study,
)

from analysis.load import ReportError
from analysis.report import make_report

N_BOOT = 100
URL = re.compile(r"""\b(?:src|href)\s*=\s*["']([^"']*)["']""", re.I)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    folder = full_study(tmp_path_factory.mktemp("full") / "toy")
    return make_report(folder, n_boot=N_BOOT)


def _offdiag_gains(method: str) -> np.ndarray:
    return np.array([gain_pts(method, i, j) for i in range(4) for j in range(4) if i != j])


def test_the_report_writes_one_self_contained_page_and_its_files(full):
    assert full.out == full.folder / "_report" and full.html.is_file()
    assert pq.read_table(full.folder).num_rows == len(toy_rows())  # the folder still reads as one table
    for name in ("summary.csv", "summary.md", "gains.csv", "best_sources.csv", "correlations.csv"):
        assert (full.out / name).is_file(), name
    pngs = sorted(full.out.glob("*.png"))
    assert sorted(full.figures) == pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    names = {p.name for p in pngs}
    assert {"gain-coop-joint-4shot.png", "gain-vpt-joint-4shot.png", "points-single-zeroshot.png"} <= names
    assert {"similarity-designed_visual.png", "similarity-visual.png", "similarity-prompt-coop.png"} <= names
    assert {"scatter-coop-joint-4shot.png", "scatter-vpt-joint-4shot.png"} <= names
    page = full.html.read_text()
    assert page.count("<img ") == len(full.figures)
    urls = URL.findall(page)
    assert urls and all(u.startswith(("data:image/png;base64,", "#")) for u in urls), urls
    assert "http://" not in page and "https://" not in page and "<link" not in page and "<script" not in page


def test_summary_numbers_are_the_designed_gains(full):
    summary = pd.read_csv(full.out / "summary.csv").set_index("method")
    for method in ("coop", "vpt"):
        gains = _offdiag_gains(method)
        assert summary.loc[method, "mean_gain_pts"] == pytest.approx(gains.mean())
        assert summary.loc[method, "share_positive"] == pytest.approx((gains > 0).mean())
        assert summary.loc[method, "n_pairs"] == 12 and summary.loc[method, "n_missing_pairs"] == 0
        assert summary.loc[method, "mean_single_pts"] == pytest.approx(50.0)
    assert summary.loc["coop", "mean_zeroshot_pts"] == pytest.approx(26.25)
    gains = pd.read_csv(full.out / "gains.csv").set_index(["method", "source", "target"])
    assert gains.loc[("coop", "a", "b"), "gain_pts"] == pytest.approx(10 * VISUAL[0, 1] - 4)
    best = pd.read_csv(full.out / "best_sources.csv").set_index(["method", "target"])
    for j, target in enumerate(TASKS):  # coop's best source is the visually closest task
        closest = max((i for i in range(4) if i != j), key=lambda i: VISUAL[i, j])
        assert best.loc[("coop", target), "best_source"] == TASKS[closest]


def test_the_findings_come_first_then_the_overview_and_the_tables(full):
    lines = full.lines
    assert lines[0].startswith("Claims below hold at a 5% false discovery rate (Benjamini-Hochberg")
    blank = lines.index("")
    assert 1 <= blank <= 12  # at most twelve sentences, then the overview
    assert lines[blank + 1].startswith(
        "study toy (backbone builtin): 44 of 44 expected cells stored; 44 ok, 0 failed"
    )
    # four tasks are too few for any relabelling p to survive the adjustment: one no-claim sentence each
    assert [s.split(":")[0] for s in lines[1:blank] if "no claim" in s] == ["coop", "vpt"]
    md = (full.out / "summary.md").read_text()
    assert md.index("## Findings") < md.index("## Overview") < md.index("## Per method")
    assert "| coop joint 4-shot |" in md and "1.00 [1.00, 1.00]" in md
    assert not re.search(r"&[a-z]+;|&#", md)  # Markdown, not HTML entities


def test_not_a_study_and_an_empty_study_are_one_line_errors(tmp_path):
    (tmp_path / "plain").mkdir()
    with pytest.raises(ReportError, match="not a study folder") as err:
        make_report(tmp_path / "plain")
    assert "\n" not in str(err.value)
    empty = write_study(tmp_path / "empty", [], grid={"single/coop": 4})
    with pytest.raises(ReportError, match="empty study: no cells"):
        make_report(empty)
    (empty / "deadbeef.parquet").write_bytes(b"garbage")
    with pytest.raises(ReportError, match="1 unreadable file"):
        make_report(empty)
    assert not (empty / "_report").exists()


def test_a_study_with_only_single_runs_shows_what_exists(tmp_path):
    folder = write_study(tmp_path / "toy", toy_rows(transfers=False), designed=designed_rows())
    report = make_report(folder, n_boot=N_BOOT)
    page = report.html.read_text()
    assert "No transfer cells in this study" in page
    assert any(line.startswith("no transfer cells") for line in report.lines)
    assert {p.name for p in report.figures} == {
        "points-single-zeroshot.png",
        "similarity-designed_visual.png",
        "similarity-designed_label.png",
    }
    assert page.count("<img ") == 3 and "50.0" in page  # the singles table
    assert pd.read_csv(report.out / "summary.csv")["mean_gain_pts"].isna().all()


def test_a_damaged_partial_study_is_reported_without_invented_numbers(tmp_path):
    rows = toy_rows()
    for r in rows:
        if r["stage"] == "transfer" and r["method"] == "coop" and (r["source"], r["target"]) == ("a", "b"):
            r["value"] = float("nan")  # ok but NaN: missing, not zero
        if r["stage"] == "single" and r["method"] == "vpt" and r["target"] == "c":
            r.update(status="failed", value=None)
    dropped = {("b", "d"), ("c", "d")}
    rows = [
        r
        for r in rows
        if not (r["stage"] == "transfer" and r["method"] == "vpt" and (r["source"], r["target"]) in dropped)
    ]
    grid = {
        "zeroshot/zeroshot": 4,
        "single/coop": 4,
        "single/vpt": 4,
        "transfer/coop": 16,
        "transfer/vpt": 16,
    }
    folder = write_study(tmp_path / "toy", rows, grid=grid, designed=designed_rows())
    (folder / "0123deadbeef.parquet").write_bytes(b"PAR1 torn")
    report = make_report(folder, n_boot=N_BOOT)
    text, page = report.text, report.html.read_text()
    assert "0123deadbeef.parquet" in text and "0123deadbeef.parquet" in page
    assert "42 of 44 expected cells stored; 40 ok, 1 failed, 1 NaN, 2 missing" in report.text
    assert "1 cell(s) report status ok without a finite value (NaN)" in page
    assert (
        "coop joint 4-shot: 11 of 12 stored off-diagonal pairs have a gain; "
        "1 without one (1 transfer failed or NaN)" in page
    )
    assert (
        "vpt joint 4-shot: 7 of 10 stored off-diagonal pairs have a gain; "
        "3 without one (3 single run failed or NaN)" in page
    )
    assert "vpt: 2 of the grid&#39;s 16 transfer cells not run yet" in page  # not yet run: not missing data
    gains = pd.read_csv(report.out / "gains.csv").set_index(["method", "source", "target"])
    assert np.isnan(gains.loc[("coop", "a", "b"), "gain_pts"])
    assert gains.loc[("vpt", "a", "c"), ["gain_pts", "single_pts"]].isna().all()
    summary = pd.read_csv(report.out / "summary.csv").set_index("method")
    coop = np.delete(_offdiag_gains("coop"), 0)  # (a, b) is the first off-diagonal pair
    assert summary.loc["coop", "mean_gain_pts"] == pytest.approx(coop.mean())
    assert summary.loc["vpt", "n_pairs"] == 7 and summary.loc["vpt", "n_missing_pairs"] == 5
    assert "6 of 16 cells have no gain" in page  # vpt's heatmap: 5 off-diagonal and the diagonal of c


def test_without_embeddings_the_designed_and_gain_sections_still_work(tmp_path):
    folder = write_study(tmp_path / "toy", toy_rows(), designed=designed_rows())
    report = make_report(folder, n_boot=N_BOOT)
    page = report.html.read_text()
    assert "visual, label and prompt similarities: not computed (no _tables/embeddings.parquet)" in page
    assert (
        "visual, label and prompt similarities: not computed (no _tables/embeddings.parquet)" in report.lines
    )
    names = {p.name for p in report.figures}
    assert "similarity-designed_visual.png" in names and "scatter-coop-joint-4shot.png" in names
    assert not any(n.startswith(("similarity-visual", "similarity-prompt")) for n in names)
    assert "1.00 [1.00, 1.00]" in (report.out / "summary.md").read_text()


def test_prompts_of_one_method_only_leave_the_other_without_a_prompt_similarity(tmp_path):
    rows = toy_rows() + [cell("single", "upt", t, 0.4) for t in TASKS]
    folder = write_study(tmp_path / "toy", rows, embeddings=embedding_rows(methods=("coop",)))
    report = make_report(folder, n_boot=20)
    names = {p.name for p in report.figures}
    assert "similarity-prompt-coop.png" in names and "similarity-prompt-vpt.png" not in names
    corr = pd.read_csv(report.out / "correlations.csv")
    assert set(corr.loc[corr["method"] == "vpt", "similarity"]) == {"visual", "label", "label_match"}
    summary = pd.read_csv(report.out / "summary.csv").set_index("method")
    assert summary.loc["upt", "mean_single_pts"] == pytest.approx(40.0) and pd.isna(
        summary.loc["upt", "mode"]
    )


def test_several_shots_modes_and_seeds_get_one_heatmap_each(tmp_path):
    rows = [cell("zeroshot", "zeroshot", t, 0.3) for t in TASKS]
    for shots in (2, 4):
        for seed in (0, 1):
            rows += [cell("single", "coop", t, 0.5, shots=shots, seed=seed) for t in TASKS]
            for mode in ("init", "joint"):
                rows += [
                    cell(
                        "transfer",
                        "coop",
                        t,
                        0.5 + (i + j + seed) / 100,
                        source=s,
                        mode=mode,
                        shots=shots,
                        seed=seed,
                    )
                    for i, s in enumerate(TASKS)
                    for j, t in enumerate(TASKS)
                ]
    report = make_report(write_study(tmp_path / "toy", rows), n_boot=10)
    names = {p.name for p in report.figures}
    assert names == {f"gain-coop-{m}-{k}shot.png" for m in ("init", "joint") for k in (2, 4)} | {
        "points-single-zeroshot.png",
        "panel-gains.png",
    }
    page = report.html.read_text()
    assert (
        "coop init 2-shot: 24 of 24 stored off-diagonal (pair, seed) combinations have a gain; "
        "none without one" in page
    )
    gains = pd.read_csv(report.out / "gains.csv").set_index(["mode", "shots", "source", "target"])
    assert gains.loc[("joint", 4, "a", "d"), "gain_pts"] == pytest.approx(
        3.5
    )  # (0 + 3 + seed) over seeds 0, 1
    assert gains.loc[("joint", 4, "a", "d"), "n_seeds"] == 2


CHROMIUM = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
WINDOW = 1400
PROBE = """<script>
window.addEventListener('load', () => {
  const all = Array.from(document.images);
  const ok = all.filter(i => i.complete && i.naturalWidth > 0).length;
  const w = window.innerWidth;
  const boxed = el => el.parentElement && el.parentElement.closest('.scroll') !== null;
  const wide = Array.from(document.body.querySelectorAll('*'))
    .filter(el => !boxed(el) && el.getBoundingClientRect().right > w + 0.5).map(el => el.tagName);
  const first = document.body.querySelector('h1 ~ *');
  document.body.setAttribute('data-images', ok + '/' + all.length);
  document.body.setAttribute('data-window', w + ' ' + document.documentElement.scrollWidth);
  document.body.setAttribute('data-wide', wide.join(',') || 'none');
  document.body.setAttribute('data-first', first ? first.id : '');
});
</script>"""


def _browse(page: str, tmp_path) -> str:
    """The page's DOM after load in headless Chromium at a 1400 px wide window, with the probe's marks."""
    probe = tmp_path / "probe.html"  # the page itself has no script; the probe is added to a copy
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--window-size={WINDOW},900",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def test_in_a_1400_px_browser_window_the_page_fits_its_images_load_and_the_findings_come_first(
    full, tmp_path
):
    if CHROMIUM is None:
        pytest.skip("chromium not installed: apt-get install chromium")
    dom = _browse(full.html.read_text(), tmp_path)
    n = len(full.figures)
    assert f'data-images="{n}/{n}"' in dom, dom[:300]
    assert f'data-window="{WINDOW} {WINDOW}"' in dom  # the page never scrolls sideways
    assert 'data-wide="none"' in dom, re.search(r'data-wide="[^"]*"', dom)
    assert 'data-first="findings"' in dom  # right under the title
    assert dom.index('id="findings"') < dom.index("<img ")


def test_the_statistics_are_tables_with_raw_and_adjusted_p_and_one_seed_says_noise_is_unmeasured(full):
    assert "Seed noise: coop joint 4-shot unmeasured (one seed per pair" in full.text
    per_target = pd.read_csv(full.out / "per_target.csv")
    assert {"spearman", "kendall", "ndcg@3", "ndcg@5", "regret@1", "regret@3"} <= set(per_target["statistic"])
    headline = per_target["statistic"].isin(["spearman", "kendall", "ndcg@5", "regret@1"])
    assert (
        per_target.loc[headline, "p_adjusted"].notna().all()
        and per_target.loc[~headline, "p_adjusted"].isna().all()
    )
    assert (per_target.loc[headline, "p_adjusted"] >= per_target.loc[headline, "p_value"] - 1e-12).all()
    model = pd.read_csv(full.out / "model.csv").set_index(["method", "model", "term"])
    assert model.loc[("coop", "designed", "designed_visual"), "estimate"] == pytest.approx(10.0)
    assert {"p_value", "p_adjusted", "p_clustered"} <= set(model.columns)
    page = full.html.read_text()
    assert page.index("Per target:") < page.index("Global Spearman")
    assert "Spearman ρ" in page and "adjusted" in page and "coop joint 4-shot:" in page
    for name in ("panel-gains.png", "panel-gains.svg"):
        assert (full.out / name).is_file()
    assert (full.out / "panel-gains.svg").read_text().lstrip().startswith("<?xml")


def test_extra_seeds_on_some_pairs_measure_the_noise_of_every_pair(tmp_path):
    rows = toy_rows(methods=("coop",))
    rows += [cell("single", "coop", t, 0.5, seed=1) for t in TASKS]
    extra = {("a", "b"): 1.0, ("b", "c"): -1.0, ("c", "d"): 1.0, ("d", "a"): -1.0}  # seed 1 minus seed 0
    for (s, t), d in extra.items():
        g = gain_pts("coop", TASKS.index(s), TASKS.index(t)) + d
        rows.append(cell("transfer", "coop", t, 0.5 + g / 100, source=s, mode="joint", seed=1))
    report = make_report(write_study(tmp_path / "toy", rows, designed=designed_rows()), n_boot=N_BOOT)
    noise = pd.read_csv(report.out / "noise.csv").iloc[0]
    assert noise["measured"] and noise["pairs_multi_seed"] == 4 and noise["pairs"] == 12
    assert noise["seed_sd_pts"] == pytest.approx(np.sqrt(0.5))  # each pair: variance d^2 / 2
    gains = pd.read_csv(report.out / "gains.csv").set_index(["source", "target"])
    assert gains.loc[("a", "b"), "gain_se_pts"] == pytest.approx(0.5)  # sqrt(0.5 / 2)
    assert gains.loc[("a", "c"), "gain_se_pts"] == pytest.approx(np.sqrt(0.5))  # one seed: pooled sd
    assert "Seed noise: coop joint 4-shot seed sd 0.71 points, reliability" in report.text
    assert "unmeasured" not in report.text
    # the seeds a pair that a reliability of 0.7 takes, by the measured noise, in the table and the text
    counts = [noise[k] for k in ("seeds_for_07_within", "seeds_for_07")]
    said = ["no number of seeds (no signal above the noise)" if np.isinf(c) else str(int(c)) for c in counts]
    assert all(c >= 1 for c in counts)
    assert f"(0.7 takes {said[0]} seeds a pair within targets, {said[1]} overall, by the measured noise)" in (
        report.text
    )
    page = report.html.read_text()
    assert "Outlined cells: mean gain more than 2 standard errors from zero" in page
    assert "of which seed noise" in page  # the decomposition's column beside the pairwise share
    assert 0 < noise["noise_share"] <= noise["pairwise_share"]
