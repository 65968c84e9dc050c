"""The report's tables as display strings (points, intervals, raw and adjusted p-values), one function
per table, each a pure function of the analysis."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.assemble import HEADLINE, SIMILARITIES, Analysis, method_key, setting_label, shots_text
from analysis.combine import DONOR
from analysis.gains import SETTING_KEYS
from analysis.pertarget import STATISTIC_NAMES
from analysis.text import claim, finite, interval, num, pvalue


def _setting_col(df: pd.DataFrame) -> pd.Series:
    return pd.Series([setting_label(s) for s in df[SETTING_KEYS].itertuples(index=False)], index=df.index)


def method_table(a: Analysis) -> pd.DataFrame:
    """The per-method summary as display strings."""
    m = a.methods
    out = pd.DataFrame(
        {
            "setting": [
                setting_label(s)
                if isinstance(s[1], str)
                else f"{s[0]} {shots_text(s[2])}-shot (no transfers)"
                for s in m[SETTING_KEYS].itertuples(index=False)
            ],
            "zero-shot (pts)": m["mean_zeroshot_pts"].map(num),
            "single (pts)": m["mean_single_pts"].map(num),
            "mean gain (pts)": m["mean_gain_pts"].map(lambda x: num(x, 2)),
            "positive gains": m["share_positive"].map(lambda x: f"{100 * x:.0f}%" if finite(x) else "–"),
            "pairs with a gain": m["n_pairs"].map(lambda x: f"{int(x)}" if finite(x) else "0"),
            "pairs missing": m["n_missing_pairs"].map(lambda x: f"{int(x)}" if finite(x) else "–"),
        }
    )
    for key, (name, _) in SIMILARITIES.items():
        if f"rho_{key}" in m:
            out[f"ρ {name}"] = [
                interval(r[f"rho_{key}"], r[f"rho_{key}_lo"], r[f"rho_{key}_hi"]) for _, r in m.iterrows()
            ]
    return out


def correlation_display(a: Analysis) -> pd.DataFrame:
    """One row per setting and similarity: Spearman ρ with the gain and with the pairwise residual."""
    c = a.correlations
    rows = []
    for (method, mode, shots, key), part in c.groupby([*SETTING_KEYS, "similarity"], sort=False):
        by = part.set_index("kind")
        row = {"setting": setting_label((method, mode, shots)), "similarity": SIMILARITIES[key][0]}
        for kind, name in (("gain", "ρ with gain"), ("residual", "ρ with pairwise residual")):
            e = by.loc[kind] if kind in by.index else None
            row[f"{name} [95% interval]"] = (
                interval(e["estimate"], e["lo"], e["hi"]) if e is not None else "n/a"
            )
        first = part.iloc[0]
        row.update(pairs=first["n_pairs"], tasks=first["n_tasks"], **{"valid resamples": first["n_boot"]})
        rows.append(row)
    return pd.DataFrame(rows)


def partial_display(a: Analysis) -> pd.DataFrame:
    p = a.partial
    return pd.DataFrame(
        {
            "setting": _setting_col(p),
            "similarity": p["similarity"].map(lambda k: SIMILARITIES[k][0]),
            "controlling for": p["controls"].map(lambda k: SIMILARITIES[k][0]),
            "partial Spearman ρ [95% interval]": [
                interval(e, lo, hi) for e, lo, hi in zip(p["estimate"], p["lo"], p["hi"], strict=True)
            ],
            "pairs": p["n_pairs"],
        }
    )


def regression_display(a: Analysis) -> pd.DataFrame:
    r = a.regression
    terms = {"intercept": "intercept (points)", "r2": "R²"}
    return pd.DataFrame(
        {
            "setting": _setting_col(r),
            "predictors": r["predictors"].map(
                lambda s: " + ".join(SIMILARITIES[k][0] for k in s.split(" + "))
            ),
            "term": r["term"].map(
                lambda t: terms[t] if t in terms else f"{SIMILARITIES[t][0]} (points per SD)"
            ),
            "estimate [95% interval]": [
                interval(e, lo, hi) for e, lo, hi in zip(r["estimate"], r["lo"], r["hi"], strict=True)
            ],
            "pairs": r["n_pairs"],
        }
    )


def ranking_display(a: Analysis) -> pd.DataFrame:
    r = a.ranking
    return pd.DataFrame(
        {
            "setting": _setting_col(r),
            "sources ranked by": r["ranking"].map(lambda k: SIMILARITIES[k][0] if k in SIMILARITIES else k),
            "NDCG@5": r["ndcg"].map(lambda x: num(x, 3)),
            "regret@1 (points)": r["regret"].map(lambda x: num(x, 2)),
            "targets": r["n_targets"],
        }
    )


def _p_pair(p, adjusted) -> str:
    return f"p {pvalue(p)}, adjusted {pvalue(adjusted)}"


def per_target_tables(a: Analysis, statistics: Sequence[str] = HEADLINE) -> list[tuple[str, pd.DataFrame]]:
    """Per method setting, (its label, a similarity x statistic table): each headline statistic's mean
    over targets with its task-bootstrap interval, its raw and BH-adjusted p, NDCG and regret beside
    the random ranking's expectation."""
    t = a.per_target
    out = []
    for setting, part in t.groupby(SETTING_KEYS, sort=False, dropna=False):
        rows = []
        for key, sim in part.groupby("similarity", sort=False):
            by = sim.set_index("statistic")
            row = {"similarity": SIMILARITIES.get(key, (key,))[0]}
            for st in [s for s in statistics if s in by.index]:
                e = by.loc[st]
                text = (
                    f"{interval(e['estimate'], e['lo'], e['hi'])}; {_p_pair(e['p_value'], e['p_adjusted'])}"
                )
                if st not in ("spearman", "kendall"):
                    text += f"; random {num(e['random'], 2)}"
                row[STATISTIC_NAMES[st]] = text
            row["targets"] = int(sim["n_targets"].iloc[0])
            rows.append(row)
        out.append((setting_label(tuple(setting)), pd.DataFrame(rows)))
    return out


def model_tables(a: Analysis) -> list[tuple[str, pd.DataFrame]]:
    """Per method setting, (its label, one row per model and term): points of gain per unit of the term
    with its task-bootstrap interval, the relabelling p-value raw and BH-adjusted, the clustered-error
    p-value beside, and the model's R²."""
    out = []
    for setting, m in a.model.groupby(SETTING_KEYS, sort=False, dropna=False):
        table = pd.DataFrame(
            {
                "model": m["model"],
                "term": m["term"].map(lambda k: SIMILARITIES.get(k, (k,))[0]),
                "points per unit [95% interval]": [
                    interval(e, lo, hi) for e, lo, hi in zip(m["estimate"], m["lo"], m["hi"], strict=True)
                ],
                "p (relabelling)": m["p_value"].map(pvalue),
                "adjusted p": m["p_adjusted"].map(pvalue),
                "p (clustered errors)": m["p_clustered"].map(pvalue),
                "R² (with source and target)": m["r2"].map(lambda x: num(x, 3)),
                "pairs": m["n_pairs"],
            }
        )
        out.append((setting_label(tuple(setting)), table))
    return out


def _with_interval(n: pd.DataFrame, name: str) -> list[str]:
    return [
        interval(x, lo, hi) if finite(x) and finite(lo) else num(x, 2, "n/a")
        for x, lo, hi in zip(n[name], n[f"{name}_lo"], n[f"{name}_hi"], strict=True)
    ]


def _seeds(x) -> str:
    """A count of seeds a pair: 'none' where no number reaches the level, n/a where unmeasured."""
    if pd.isna(x):
        return "n/a"
    return "none" if np.isinf(x) else f"{int(x)}"


def _self_controls(a: Analysis, n: pd.DataFrame) -> list[str]:
    """Per noise row, its setting's self control (points, +- its SE over targets)."""
    if a.self_control is None or a.self_control.empty:
        return ["n/a"] * len(n)
    sc = n[SETTING_KEYS].merge(a.self_control, on=SETTING_KEYS, how="left")
    return [
        f"{g:+.2f} +- {num(se, 2, 'n/a')}" if finite(g) else "n/a"
        for g, se in zip(sc["self_gain_pts"], sc["self_se_pts"], strict=True)
    ]


def noise_display(a: Analysis) -> pd.DataFrame:
    n = a.noise
    pct = lambda x: f"{100 * x:.1f}%" if finite(x) else "n/a"  # noqa: E731
    return pd.DataFrame(
        {
            "setting": _setting_col(n),
            "seed sd of a gain (pts)": n["seed_sd_pts"].map(lambda x: num(x, 2, "unmeasured")),
            "of it transfer / single (pts)": [
                f"{num(t, 2, 'n/a')} / {num(s, 2, 'n/a')}"
                for t, s in zip(n["transfer_sd_pts"], n["single_sd_pts"], strict=True)
            ],
            "self control (pts)": _self_controls(a, n),
            "pairs with 2+ seeds": [
                f"{int(m)} of {int(p)}" for m, p in zip(n["pairs_multi_seed"], n["pairs"], strict=True)
            ],
            "whole noise columns": n["noise_columns"].map(lambda x: num(x, 0, "0")),
            "pairwise share": n["pairwise_share"].map(pct),
            "noise floor (share)": n["noise_share"].map(pct),
            "pairwise above noise": n["pairwise_above_noise"].map(pct),
            "reliability": _with_interval(n, "reliability"),
            "reliability within targets": _with_interval(n, "reliability_within"),
            "seeds a pair for 0.7 (within targets / overall)": [
                f"{_seeds(w)} / {_seeds(o)}"
                for w, o in zip(n["seeds_for_07_within"], n["seeds_for_07"], strict=True)
            ],
            "cells > 2 SE": n["cells_beyond_2se"].where(n["measured"]).map(lambda x: num(x, 0, "n/a")),
        }
    )


def decomposition_display(a: Analysis) -> pd.DataFrame:
    d = a.decomposition
    if a.noise is not None:  # the seed noise beside the shares: how much of the pairwise part it is
        d = d.merge(
            a.noise[[*SETTING_KEYS, "noise_share", "pairwise_above_noise"]], on=SETTING_KEYS, how="left"
        )
    else:
        d = d.assign(noise_share=np.nan, pairwise_above_noise=np.nan)
    pct = lambda x: f"{100 * x:.1f}%" if finite(x) else "n/a"  # noqa: E731
    return pd.DataFrame(
        {
            "setting": _setting_col(d),
            "mean gain (pts)": d["mean_gain_pts"].map(lambda x: num(x, 2)),
            "source effect": d["share_source"].map(pct),
            "target effect": d["share_target"].map(pct),
            "interaction (pairwise)": d["share_residual"].map(pct),
            "of which seed noise": d["noise_share"].map(lambda x: pct(x) if finite(x) else "unmeasured"),
            "pairwise above noise": d["pairwise_above_noise"].map(pct),
            "cross term": d["share_cross"].map(pct),
            "additive R²": d["r2_additive"].map(lambda x: num(x, 3)),
            "cells": d["n_cells"],
        }
    )


def best_display(a: Analysis) -> tuple[pd.DataFrame, list[tuple[str, int]]]:
    """Rows: targets in the shared order; per setting the target's single points, its best off-diagonal
    source and that source's gain. Returns the table and its header groups (one per setting)."""
    b = a.best
    zeroshot = a.zeroshot.groupby(level=0).mean().reindex(a.tasks).map(num)
    table = pd.DataFrame({"target": a.tasks, "zero-shot (pts)": zeroshot.to_numpy()})
    groups = [("", 2)]
    for setting in a.settings:
        part = b[(b["method"] == setting[0]) & (b["mode"] == setting[1]) & (b["shots"] == setting[2])]
        part = part.set_index("target").reindex(a.tasks)
        gains = [
            f"{g:+.1f}" + (f" ± {sd:.1f}" if finite(sd) else "") if finite(g) else "–"
            for g, sd in zip(part["best_gain_pts"], part["best_gain_sd_pts"], strict=True)
        ]
        extra = pd.DataFrame(
            {
                "single (pts)": part["single_pts"].map(num).to_numpy(),
                "best source": part["best_source"].map(lambda s: s if isinstance(s, str) else "–").to_numpy(),
                "its gain (pts)": gains,
            }
        )
        table = pd.concat([table, extra], axis=1)
        groups.append((setting_label(setting), 3))
    return table, groups


def _left_out(r: pd.Series) -> str:
    parts = [
        (r["n_failed"], "failed"),
        (r["n_no_single"], "without a single run"),
        (r["n_missing"], "missing"),
    ]
    return ", ".join(f"{int(n)} {why}" for n, why in parts if finite(n) and n) or "none"


def claims(df: pd.DataFrame, est: str, lo: str, hi: str, digits: int = 1) -> list[str]:
    # the table's column names carry the unit
    return [
        claim(e, low, high, digits, unit="") for e, low, high in zip(df[est], df[lo], df[hi], strict=True)
    ]


def _policy_display(t: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """The columns a multi-source and a group table share, one row per method, shots and policy."""
    lead = [
        f"{c}, {int(n)} targets" if finite(n) else "–"
        for c, n in zip(
            claims(t, "diff_random_pts", "diff_random_lo", "diff_random_hi"), t["n_paired"], strict=True
        )
    ]
    return pd.DataFrame(
        {
            "setting": [f"{m} {shots_text(k)}-shot" for m, k in zip(t["method"], t["shots"], strict=True)],
            "policy": t["policy"],
            "gain over single (pts) [95% interval]": claims(t, "gain_pts", "gain_lo", "gain_hi"),
            "wins over single": [
                f"{int(w)} of {int(n)}" for w, n in zip(t["wins"], t["n_targets"], strict=True)
            ],
            "p vs single (adjusted)": [
                f"{pvalue(p)} ({pvalue(q)})" for p, q in zip(t["gain_p"], t["gain_p_adjusted"], strict=True)
            ],
            f"minus {baseline} (pts) [95% interval]": lead,
            f"p vs {baseline} (adjusted)": [
                f"{pvalue(p)} ({pvalue(q)})"
                for p, q in zip(t["diff_random_p"], t["diff_random_p_adjusted"], strict=True)
            ],
            "cells left out": [_left_out(r) for _, r in t.iterrows()],
        }
    )


def multisource_display(a: Analysis) -> pd.DataFrame:
    """Per method, shots and policy: the multi-source gain over single, wins, and the lead over random_k."""
    return _policy_display(a.multisource, "random_k")


def groups_display(a: Analysis) -> pd.DataFrame:
    """Per method, shots and policy: the groups found, their members' gain over single, and the lead
    over random groups of the same sizes."""
    g = a.groups
    out = _policy_display(g, "random groups")
    out.insert(2, "groups", g["groups"].to_numpy())
    return out


def _predictor_name(key: str) -> str:
    return "donor (mean gain on the other targets)" if key == DONOR else SIMILARITIES.get(key, (key,))[0]


def prediction_display(a: Analysis) -> pd.DataFrame:
    """Per setting and predictor: the mean actual gain of the predicted k sources beside the best k and
    k at random, the lead over random and the regret with their intervals, and how often the best
    source is among the predicted."""
    p = a.prediction
    pts = lambda x: num(x, 2)  # noqa: E731
    return pd.DataFrame(
        {
            "setting": _setting_col(p),
            "predictor": p["predictor"].map(_predictor_name),
            "k": p["k"],
            "predicted k (pts)": p["predicted_gain_pts"].map(pts),
            "best k (pts)": p["oracle_gain_pts"].map(pts),
            "random k (pts)": p["random_gain_pts"].map(pts),
            "predicted − random [95% interval]": claims(
                p, "vs_random_pts", "vs_random_lo", "vs_random_hi", 2
            ),
            "regret: best − predicted [95% interval]": [
                interval(e, lo, hi)
                for e, lo, hi in zip(p["regret_pts"], p["regret_lo"], p["regret_hi"], strict=True)
            ],
            "best source among predicted": p["hit_rate"].map(
                lambda x: f"{100 * x:.0f}%" if finite(x) else "–"
            ),
            "targets": p["n_targets"],
        }
    )


def prediction_targets_display(a: Analysis) -> pd.DataFrame:
    """Per setting and target: its best source by gain, then the k sources each predictor chose."""
    p = a.prediction_targets
    wide = p.pivot_table(
        index=[*SETTING_KEYS, "target", "best_source"],
        columns="predictor",
        values="predicted",
        aggfunc="first",
    )
    wide = wide[list(dict.fromkeys(p["predictor"]))].reset_index()
    out = pd.DataFrame(
        {"setting": _setting_col(wide), "target": wide["target"], "best source": wide["best_source"]}
    )
    for key in dict.fromkeys(p["predictor"]):
        out[f"chosen by {_predictor_name(key)}"] = wide[key].to_numpy()
    return out


def singles_display(a: Analysis) -> pd.DataFrame:
    s = a.singles.copy()
    s["order"] = s["target"].map({t: i for i, t in enumerate(a.tasks)})
    s["rank"] = s["method"].map(lambda m: method_key(m)[0])
    s = s.sort_values(["rank", "method", "shots", "order"])
    return pd.DataFrame(
        {
            "method": s["method"],
            "shots": s["shots"].map(shots_text),
            "task": s["target"],
            "single (pts)": s["single_pts"].map(num),
            "sd over seeds": s["single_sd_pts"].map(num),
            "seeds with a value": s["n_seeds"],
        }
    )


def progress_display(a: Analysis) -> pd.DataFrame:
    p = a.progress.copy()
    for col in ("expected", "missing"):
        p[col] = p[col].map(lambda x: f"{int(x)}" if finite(x) else "?")
    return p.rename(columns={"nan": "ok but NaN value"})
