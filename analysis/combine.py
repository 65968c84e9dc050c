"""Which sources to combine: multi-source and group cells against single-task tuning, and which sources a
target would be given when its own gains are held out."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd

from analysis.gains import SINGLE_KEYS, stage_values
from analysis.stats import align, content_order

# the stages read here; a multitask cell (target "a+b+c") starts them but has no gain of its own
MULTISOURCE = "multisource"
GROUPS = "groups"
SET_SEP = "+"  # a set of tasks is stored as its names, sorted and joined by this
RANDOM_K = "random_k"  # the multisource baseline: k sources drawn at random
RANDOM_GROUPS = "random:"  # "random:<p>": random groups with the sizes of policy <p>'s partition
DONOR = "donor"  # the held-out predictor: each source's mean gain over the other targets

CELL_KEYS = ["method", "shots", "policy", "seed", "source", "target"]
POLICY_KEYS = ["method", "shots", "policy"]
INTERVAL = ["gain_pts", "gain_lo", "gain_hi", "gain_p"]
VS_RANDOM = ["diff_random_pts", "diff_random_lo", "diff_random_hi", "diff_random_p", "n_paired"]
ADJUSTED = ["gain_p_adjusted", "diff_random_p_adjusted"]
COUNTS = ["n_failed", "n_no_single", "n_missing"]
MULTISOURCE_COLUMNS = [*POLICY_KEYS, "n_targets", *INTERVAL, "wins", *VS_RANDOM, *ADJUSTED, *COUNTS]
GROUPS_COLUMNS = [
    *POLICY_KEYS,
    "groups",
    "n_groups",
    "n_targets",
    *INTERVAL,
    "wins",
    *VS_RANDOM,
    *ADJUSTED,
    *COUNTS,
]
PREDICTION_COLUMNS = [
    "predictor",
    "target",
    "k",
    "n_sources",
    "predicted",
    "best_source",
    "predicted_gain_pts",
    "oracle_gain_pts",
    "random_gain_pts",
    "hit_best",
]
PREDICTION_SUMMARY_COLUMNS = [
    "predictor",
    "k",
    "n_targets",
    "predicted_gain_pts",
    "oracle_gain_pts",
    "random_gain_pts",
    "vs_random_pts",
    "vs_random_lo",
    "vs_random_hi",
    "regret_pts",
    "regret_lo",
    "regret_hi",
    "hit_rate",
]


def task_set(text: str) -> list[str]:
    """The task names of a stored set ("a+b+c")."""
    return str(text).split(SET_SEP)


def mean_interval(
    x: np.ndarray, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lo, hi) of per-target values with a percentile bootstrap over targets; NaN values are
    left out, and the interval is NaN below two targets or two resamples."""
    from scipy.stats import bootstrap

    x = np.asarray(x, float)
    x = np.sort(x[np.isfinite(x)])  # resamples draw by value, not by the targets' names
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    if x.size < 2 or n_boot < 2:
        return float(x.mean()), float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns of a degenerate distribution (equal values)
        res = bootstrap(
            (x,),
            np.mean,
            n_resamples=n_boot,
            method="percentile",
            confidence_level=level,
            rng=np.random.default_rng(seed),
        )
    return float(x.mean()), float(res.confidence_interval.low), float(res.confidence_interval.high)


# --- multi-source and group cells against single-task tuning --------------------------------------


def cell_gains(cells: pd.DataFrame, stage: str) -> pd.DataFrame:
    """One row per cell of `stage` (multisource or groups): its points, the target's single run (same
    method, shots and seed), `gain_pts` = the difference, and `why` a gain is missing ("failed": the
    cell failed or has no finite value; "no_single": the single run is absent or failed)."""
    if "policy" not in cells:  # a folder written before the column existed
        cells = cells.assign(policy=None)
    own = stage_values(cells, stage, CELL_KEYS)
    single = stage_values(cells, "single", SINGLE_KEYS)[[*SINGLE_KEYS, "value_pts"]]
    out = own.merge(single.rename(columns={"value_pts": "single_pts"}), how="left", on=SINGLE_KEYS)
    out["value_pts"] = out["value_pts"].astype(float)
    out["single_pts"] = out["single_pts"].astype(float)
    out["gain_pts"] = out["value_pts"] - out["single_pts"]
    out["why"] = np.where(
        out["value_pts"].isna(), "failed", np.where(out["single_pts"].isna(), "no_single", "")
    )
    return out


def _per_target(gains: pd.DataFrame) -> pd.DataFrame:
    """Per (method, shots, policy, target): the mean gain over the seeds that have one (NaN if none)."""
    g = gains.groupby([*POLICY_KEYS, "target"], dropna=False, sort=False)["gain_pts"]
    return g.mean().reset_index()


def _counts(gains: pd.DataFrame) -> pd.DataFrame:
    """Per (method, shots, policy): cells that failed, cells whose single run is missing, and cells
    absent that another policy of the same method and shots has (its (target, seed) pairs)."""
    rows = []
    for (method, shots), part in gains.groupby(["method", "shots"], dropna=False, sort=False):
        expected = set(zip(part["target"], part["seed"], strict=True))
        for policy, cells in part.groupby("policy", dropna=False, sort=False):
            stored = set(zip(cells["target"], cells["seed"], strict=True))
            rows.append(
                {
                    "method": method,
                    "shots": shots,
                    "policy": policy,
                    "n_failed": int((cells["why"] == "failed").sum()),
                    "n_no_single": int((cells["why"] == "no_single").sum()),
                    "n_missing": len(expected - stored),
                }
            )
    return pd.DataFrame(rows, columns=[*POLICY_KEYS, *COUNTS])


def t_p_value(x: np.ndarray) -> float:
    """Two-sided p-value of a one-sample t-test that the mean of the per-target values is 0 (scipy);
    NaN below two values."""
    from scipy.stats import ttest_1samp

    x = np.asarray(x, float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan")
    if np.ptp(x) == 0:  # no spread: t is infinite unless every value is 0
        return 1.0 if x[0] == 0 else 0.0
    return float(ttest_1samp(x, 0.0).pvalue)


def _adjust_policies(table: pd.DataFrame) -> pd.DataFrame:
    """Benjamini-Hochberg over every policy p-value (against single and against the baseline) of one
    method and shots: the policies family."""
    from analysis.adjust import bh_adjust

    table = table.copy()
    for _, idx in table.groupby(["method", "shots"], dropna=False, sort=False).groups.items():
        p = np.r_[table.loc[idx, "gain_p"].to_numpy(float), table.loc[idx, "diff_random_p"].to_numpy(float)]
        adjusted = bh_adjust(p)
        table.loc[idx, "gain_p_adjusted"] = adjusted[: len(idx)]
        table.loc[idx, "diff_random_p_adjusted"] = adjusted[len(idx) :]
    return table


def _policy_rows(per_target: pd.DataFrame, baseline: Mapping, n_boot: int, seed: int) -> pd.DataFrame:
    """Per (method, shots, policy): mean gain over targets with its interval, wins (targets with a
    positive gain), and the paired difference to the policy's baseline (`baseline[policy]`, when it
    has one) over the targets both have."""
    rows = []
    for (method, shots), part in per_target.groupby(["method", "shots"], dropna=False, sort=False):
        wide = part.pivot_table(index="target", columns="policy", values="gain_pts", dropna=False)
        for policy in dict.fromkeys(part["policy"]):
            g = wide[policy].dropna() if policy in wide else pd.Series(dtype=float)
            row = {"method": method, "shots": shots, "policy": policy, "n_targets": len(g)}
            row.update(zip(INTERVAL, mean_interval(g.to_numpy(), n_boot, seed), strict=False))
            row.update(gain_p=t_p_value(g.to_numpy()), wins=int((g > 0).sum()))
            base = baseline.get(policy)
            if base is not None and base in wide:
                diff = (wide[policy] - wide[base]).dropna()
                row.update(zip(VS_RANDOM[:3], mean_interval(diff.to_numpy(), n_boot, seed), strict=True))
                row.update(diff_random_p=t_p_value(diff.to_numpy()), n_paired=len(diff))
            rows.append(row)
    out = pd.DataFrame(rows, columns=[*POLICY_KEYS, "n_targets", *INTERVAL, "wins", *VS_RANDOM, *ADJUSTED])
    out = _adjust_policies(out.astype({"diff_random_p": float, "gain_p": float}))
    return out.astype({"n_paired": "Int64"})  # none for a baseline itself


def multisource_table(cells: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (method, shots, policy) of the multisource cells: `n_targets` with a gain over single,
    `gain_pts` the mean over targets (each target's gain averaged over its seeds first) with a
    percentile bootstrap interval over targets (`gain_lo`, `gain_hi`), `wins` the targets with a
    positive gain, and for every policy but random_k the paired difference to random_k
    (`diff_random_*`, over the `n_paired` targets both have). Cells without a gain are left out and
    counted (`n_failed`, `n_no_single`, `n_missing`). Points of the metric throughout."""
    gains = cell_gains(cells, MULTISOURCE)
    if gains.empty:
        return pd.DataFrame(columns=MULTISOURCE_COLUMNS)
    baseline = {p: RANDOM_K for p in gains["policy"].dropna().unique() if p != RANDOM_K}
    table = _policy_rows(_per_target(gains), baseline, n_boot, seed)
    return table.merge(_counts(gains), how="left", on=POLICY_KEYS)[MULTISOURCE_COLUMNS]


def group_text(groups) -> str:
    """A partition as text: each group's members in braces, the groups in order of their first member."""
    sets = sorted({tuple(sorted(task_set(g))) for g in groups})
    return " ".join("{" + ", ".join(s) + "}" for s in sets)


def _partitions(gains: pd.DataFrame) -> pd.DataFrame:
    """Per (method, shots, policy): the groups found (one partition per seed; distinct partitions are
    joined by " | ") and the number of groups (the largest over seeds)."""
    rows = []
    for key, part in gains.groupby(POLICY_KEYS, dropna=False, sort=False):
        by_seed = [group_text(p["source"].dropna()) for _, p in part.groupby("seed", dropna=False)]
        sizes = [p["source"].nunique() for _, p in part.groupby("seed", dropna=False)]
        rows.append([*key, " | ".join(dict.fromkeys(by_seed)), max(sizes)])
    return pd.DataFrame(rows, columns=[*POLICY_KEYS, "groups", "n_groups"])


def groups_table(cells: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (method, shots, policy) of the group cells: the `groups` found ("{a, b} {c}") and
    `n_groups`, then as in `multisource_table` the members' mean gain over single with its interval,
    wins, and for each clustered policy <p> the paired difference to its random groups "random:<p>"."""
    gains = cell_gains(cells, GROUPS)
    if gains.empty:
        return pd.DataFrame(columns=GROUPS_COLUMNS)
    policies = gains["policy"].dropna().unique()
    baseline = {p: f"{RANDOM_GROUPS}{p}" for p in policies if not str(p).startswith(RANDOM_GROUPS)}
    table = _policy_rows(_per_target(gains), baseline, n_boot, seed)
    table = table.merge(_partitions(gains), how="left", on=POLICY_KEYS)
    return table.merge(_counts(gains), how="left", on=POLICY_KEYS)[GROUPS_COLUMNS]


def combine_k(cells: pd.DataFrame, default: int = 3) -> int:
    """The study's k: the most common size of the source sets of the top_k / random_k multisource
    cells, or `default` when there are none."""
    part = cells[cells["stage"] == MULTISOURCE] if "policy" in cells else cells.iloc[:0]
    part = part[part["policy"].fillna("").str.startswith(("top_k", RANDOM_K))]
    sizes = part["source"].dropna().map(lambda s: len(task_set(s)))
    return int(sizes.mode().iloc[0]) if len(sizes) else default


# --- which sources: predicted with the target's own gains held out --------------------------------


def top_k_weights(score: np.ndarray, k: int) -> np.ndarray:
    """Each candidate's chance of being among the k highest scores when every order of tied scores is
    equally likely (a NaN score ranks below every number): 1 inside, 0 outside, and for the tie group
    that straddles position k its free slots shared out evenly."""
    s = np.where(np.isfinite(score), score, -np.inf)
    higher = (s[None, :] > s[:, None]).sum(axis=1)
    same = (s[None, :] == s[:, None]).sum(axis=1)
    inside = higher + same <= k
    straddle = (higher < k) & ~inside
    return np.where(inside, 1.0, np.where(straddle, (k - higher) / same, 0.0))


def _hit(weights: np.ndarray, best: np.ndarray, k: int) -> float:
    """The chance that the top k by score hold a best source (`best`: a mask), over tie orders."""
    if (weights[best] == 1.0).any():
        return 1.0
    straddle = (weights > 0) & (weights < 1)
    m, b = int(straddle.sum()), int((straddle & best).sum())
    if b == 0:
        return 0.0
    slots = k - int((weights == 1.0).sum())
    return 1.0 - math.comb(m - b, slots) / math.comb(m, slots)


def _predicted_text(names: np.ndarray, score: np.ndarray, weights: np.ndarray, k: int) -> str:
    order = np.argsort(-np.where(np.isfinite(score), score, -np.inf), kind="stable")
    sure = [str(names[i]) for i in order if weights[i] == 1.0]
    tied = sorted(str(names[i]) for i in order if 0 < weights[i] < 1)
    text = ", ".join(sure)
    if tied:
        text += f"{' + ' if sure else ''}{k - len(sure)} of {{{', '.join(tied)}}}"
    return text


def donor_scores(gain: pd.DataFrame, target) -> pd.Series:
    """Each source's mean off-diagonal gain over the targets other than `target`, computed on the gain
    matrix with the target's row and column removed (nothing of the target's own gains is read)."""
    held = gain.drop(index=target, columns=target, errors="ignore")
    same = held.index.to_numpy()[:, None] == held.columns.to_numpy()[None, :]
    return held.mask(same).mean(axis=1)


def _target_rows(gain: pd.DataFrame, sims: Mapping[str, pd.DataFrame], target, k: int) -> list[dict]:
    """The predictions for one target, one row per predictor (none when it has k or fewer sources)."""
    actual = gain[target].drop(index=target, errors="ignore").dropna()
    if len(actual) <= k:
        return []
    g, names = actual.to_numpy(float), actual.index.to_numpy()
    scores = {DONOR: donor_scores(gain, target)}
    for name, sim in sims.items():
        scores[name] = sim[target] if target in sim.columns else pd.Series(dtype=float)
    best = g == g.max()
    rows = []
    for predictor, score in scores.items():
        s = score.reindex(actual.index).to_numpy(float)
        w = top_k_weights(s, k)
        rows.append(
            {
                "predictor": predictor,
                "target": target,
                "k": k,
                "n_sources": len(g),
                "predicted": _predicted_text(names, s, w, k),
                "best_source": ", ".join(map(str, names[best])),
                "predicted_gain_pts": float((w * g).sum() / k),
                "oracle_gain_pts": float(np.sort(g)[-k:].mean()),
                "random_gain_pts": float(g.mean()),
                "hit_best": _hit(w, best, k),
            }
        )
    return rows


def donor_leads(gain: np.ndarray, idx: np.ndarray, k: int) -> tuple[float, float]:
    """The donor predictor's whole leave-one-target-out procedure on the tasks `idx` (drawn with
    replacement; two copies of a task meet in a missing cell, and a target's copies are all held out of
    its donor scores): (mean over targets of predicted - random, mean of best k - predicted), each
    target with more than k sources counted."""
    sub = gain[np.ix_(idx, idx)]
    same = idx[:, None] == idx[None, :]
    sub = np.where(same, np.nan, sub)
    cand = np.isfinite(sub)  # [source, target]
    other = (~same).astype(float)  # [column, target]: the columns a target's donor scores may read
    with np.errstate(invalid="ignore", divide="ignore"):
        donor = (np.where(cand, sub, 0.0) @ other) / (cand.astype(float) @ other)
    s = np.where(cand & np.isfinite(donor), donor, -np.inf)
    higher = ((s[None, :, :] > s[:, None, :]) & cand[None, :, :]).sum(1)  # [source, target]
    tied = ((s[None, :, :] == s[:, None, :]) & cand[None, :, :]).sum(1)
    w = np.where(higher + tied <= k, 1.0, np.where(higher < k, (k - higher) / np.maximum(tied, 1), 0.0))
    w = np.where(cand, w, 0.0)
    n = cand.sum(0)
    g = np.where(cand, sub, 0.0)
    ok = n > k
    if not ok.any():
        return float("nan"), float("nan")
    predicted = (w * g).sum(0) / k
    random = g.sum(0) / np.maximum(n, 1)
    oracle = -np.sort(-np.where(cand, sub, -np.inf), axis=0)[:k].sum(0) / k
    return float((predicted - random)[ok].mean()), float((oracle - predicted)[ok].mean())


def donor_intervals(gain: pd.DataFrame, k: int, n_boot: int, seed: int, level: float = 0.95) -> np.ndarray:
    """Percentile intervals of the donor predictor's lead over random and its regret, the whole
    leave-one-out rerun inside each task-bootstrap resample: the targets' leads share the donor scores,
    so resampling the targets alone covered the true lead in 61% of simulated studies (and claimed one
    where there was none in 15%; bench/calibration.py). -> [[lead lo, lead hi], [regret lo, regret hi]]."""
    names = sorted(set(gain.index) & set(gain.columns), key=str)
    tasks, arrays = align({"gain": gain}, names)
    order = content_order(tasks, arrays)  # the resamples draw by values, not by names
    g = arrays["gain"][np.ix_(order, order)]
    rng = np.random.default_rng(seed)
    draws = np.array([donor_leads(g, rng.integers(0, len(g), len(g)), k) for _ in range(n_boot)])
    out = np.full((2, 2), np.nan)
    alpha = (1.0 - level) / 2.0
    for j in range(2):
        d = draws[:, j][np.isfinite(draws[:, j])] if n_boot else np.array([])
        if d.size >= 2:
            out[j] = np.quantile(d, [alpha, 1.0 - alpha])
    return out


def source_prediction(
    gain: pd.DataFrame,
    sims: Mapping[str, pd.DataFrame],
    k: int,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave one target out: predict each target's k best sources without its own gains, then score
    the prediction with them. `gain`: one method setting's gains (sources x targets, points; the
    diagonal is never a candidate). Predictors: "donor" (each source's mean gain over the other targets,
    from the matrix without the target's row and column) and each similarity in `sims` (the k sources
    most similar to the target). The candidates of a target are its sources with a gain: only which
    gains exist is read before the prediction, never their values. Ties are averaged over their orders.

    Returns (per target, summary). Per target and predictor: the mean actual gain of the predicted k
    (`predicted_gain_pts`), of the k best (`oracle_gain_pts`), of k random sources (`random_gain_pts`,
    the mean over the candidates), and `hit_best`, the chance the predicted k hold the best source.
    Summary per predictor: the means over targets, `vs_random_*` (predicted - random) and `regret_*`
    (oracle - predicted) with percentile bootstrap intervals over targets (for the donor predictor the
    whole procedure is resampled: `donor_intervals`), and `hit_rate`. Targets
    with k or fewer sources are left out."""
    if k < 1:
        raise ValueError(f"k must be 1 or more, got {k}")
    rows = [r for t in gain.columns for r in _target_rows(gain, sims, t, k)]
    per_target = pd.DataFrame(rows, columns=PREDICTION_COLUMNS)
    summary = []
    for predictor, part in per_target.groupby("predictor", sort=False):
        vs_random = mean_interval(part["predicted_gain_pts"] - part["random_gain_pts"], n_boot, seed, level)
        regret = mean_interval(part["oracle_gain_pts"] - part["predicted_gain_pts"], n_boot, seed, level)
        if predictor == DONOR:
            (vs_lo, vs_hi), (re_lo, re_hi) = donor_intervals(gain, k, n_boot, seed, level)
            vs_random, regret = (vs_random[0], vs_lo, vs_hi), (regret[0], re_lo, re_hi)
        summary.append(
            [predictor, k, len(part)]
            + [part[c].mean() for c in ("predicted_gain_pts", "oracle_gain_pts", "random_gain_pts")]
            + [*vs_random, *regret, part["hit_best"].mean()]
        )
    return per_target, pd.DataFrame(summary, columns=PREDICTION_SUMMARY_COLUMNS)
