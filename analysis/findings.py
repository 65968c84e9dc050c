"""The findings: at most a dozen plain sentences written from the report's tables alone. A sentence
states a relation, a policy or a lead only when its Benjamini-Hochberg adjusted p-value is at most
ALPHA and its interval lies on one side of chance; the rest is one "no claim" sentence per method."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

from analysis.adjust import ALPHA, CORRECTION
from analysis.assemble import setting_label
from analysis.combine import DONOR, RANDOM_GROUPS, RANDOM_K
from analysis.gains import SETTING_KEYS
from analysis.pertarget import RANK_STATS, STATISTIC_NAMES, STATISTICS
from analysis.text import claim, finite, interval, num, pvalue

MAX_SENTENCES = 12
MAX_NAMED = 3  # relations named in one sentence; the rest are counted


@dataclass(frozen=True)
class FindingTables:
    """The tables the findings read (None: the table does not exist for this study)."""

    per_target: pd.DataFrame | None = None
    model: pd.DataFrame | None = None
    noise: pd.DataFrame | None = None
    multisource: pd.DataFrame | None = None
    groups: pd.DataFrame | None = None
    prediction: pd.DataFrame | None = None
    kept_start: pd.DataFrame | None = None  # per method: tuned cells that kept their start, of cells that say
    self_control: pd.DataFrame | None = None  # per setting: the target as its own source's gain
    names: Mapping[str, str] | None = None  # similarity key -> its name in text


def _name(t: FindingTables, key: str) -> str:
    return (t.names or {}).get(key, key)


def supported_per_target(row) -> bool:
    """An adjusted p at most ALPHA and an interval wholly on one side of chance (0 for the rank
    correlations, the random ranking's expectation for NDCG and regret), on the side the test found."""
    if not (finite(row["p_adjusted"]) and row["p_adjusted"] <= ALPHA):
        return False
    lo, hi, est = row["lo"], row["hi"], row["estimate"]
    chance = 0.0 if row["statistic"] in RANK_STATS else row["random"]
    if not (finite(lo) and finite(hi) and finite(chance)):
        return False
    direction = STATISTICS[row["statistic"]][2]
    if direction == "greater":
        return lo > chance
    if direction == "less":
        return hi < chance
    return lo > 0 if est > 0 else hi < 0


def supported_coefficient(row) -> bool:
    return bool(
        finite(row["p_adjusted"])
        and row["p_adjusted"] <= ALPHA
        and finite(row["lo"])
        and finite(row["hi"])
        and (row["lo"] > 0 or row["hi"] < 0)
    )


def _settings(t: FindingTables) -> list[tuple]:
    found = []
    for table in (t.per_target, t.model):
        if table is not None:
            found += [tuple(k) for k in table[SETTING_KEYS].drop_duplicates().itertuples(index=False)]
    return list(dict.fromkeys(found))


def _part(table: pd.DataFrame | None, setting: tuple) -> pd.DataFrame:
    if table is None:
        return pd.DataFrame()
    keep = (table["method"] == setting[0]) & (table["mode"] == setting[1]) & (table["shots"] == setting[2])
    return table[keep]


def _per_target_phrase(t: FindingTables, row) -> str:
    stat = STATISTIC_NAMES[row["statistic"]]
    chance = "" if row["statistic"] in RANK_STATS else f", random {num(row['random'], 2)}"
    how = (
        "ranks each target's sources"
        if row["estimate"] >= 0 or row["statistic"] not in RANK_STATS
        else ("ranks each target's sources in reverse")
    )
    return (
        f"{_name(t, row['similarity'])} {how} (per-target {stat} "
        f"{interval(row['estimate'], row['lo'], row['hi'])}{chance}, adjusted p {pvalue(row['p_adjusted'])})"
    )


def _coefficient_phrase(t: FindingTables, row) -> str:
    return (
        f"beyond donor and receiver effects {_name(t, row['term'])} moves the gain by "
        f"{interval(row['estimate'], row['lo'], row['hi'])} points per unit "
        f"(adjusted p {pvalue(row['p_adjusted'])})"
    )


def _relations(t: FindingTables, setting: tuple) -> tuple[list[str], list[str], list[str]]:
    """(phrases of supported relations, the keys they name, the keys tested without support)."""
    phrases, named, tested = [], [], []
    per_target = _part(t.per_target, setting)
    for key, part in per_target.groupby("similarity", sort=False) if len(per_target) else []:
        tested.append(key)
        hits = [r for _, r in part.iterrows() if supported_per_target(r)]
        if hits:
            best = min(hits, key=lambda r: (r["p_adjusted"], list(STATISTICS).index(r["statistic"])))
            phrases.append(_per_target_phrase(t, best))
            named.append(key)
    for _, r in _part(t.model, setting).iterrows():
        tested.append(r["term"])
        if supported_coefficient(r):
            phrases.append(_coefficient_phrase(t, r))
            named.append(r["term"])
    tested = list(dict.fromkeys(tested))
    return phrases, list(dict.fromkeys(named)), [k for k in tested if k not in named]


def _relation_sentence(label: str, phrases: list[str]) -> str:
    shown = phrases[:MAX_NAMED]
    more = f"; and {len(phrases) - MAX_NAMED} more in the tables below" if len(phrases) > MAX_NAMED else ""
    return f"{label}: " + "; ".join(shown) + more + "."


def _policy_phrases(t: FindingTables, method: str) -> tuple[list[str], list[str]]:
    """(supported policy phrases, policies without support) of one method."""
    phrases, none = [], []
    for table, what in ((t.multisource, "multi-source"), (t.groups, "groups")):
        if table is None:
            continue
        for _, r in table[table["method"] == method].iterrows():
            base = RANDOM_K if what == "multi-source" else f"{RANDOM_GROUPS}{r['policy']}"
            said = []
            for prefix, est, against in (
                ("gain", "gain_pts", "single-task tuning"),
                ("diff_random", "diff_random_pts", base),
            ):
                if _policy_supported(r, prefix):
                    value = claim(r[est], r[f"{prefix}_lo"], r[f"{prefix}_hi"], 1, unit="")
                    p = pvalue(r[f"{prefix}_p_adjusted"])
                    verb = "beats" if r[est] > 0 else "falls short of"
                    said.append(f"{what} {r['policy']} {verb} {against} by {value} points (adjusted p {p})")
            phrases += said
            if not said:
                none.append(f"{what} {r['policy']}")
    return phrases, none


def _policy_supported(r, prefix: str) -> bool:
    est = "gain_pts" if prefix == "gain" else "diff_random_pts"
    p, lo, hi = r[f"{prefix}_p_adjusted"], r[f"{prefix}_lo"], r[f"{prefix}_hi"]
    return bool(
        finite(r[est]) and finite(p) and p <= ALPHA and finite(lo) and finite(hi) and (lo > 0 or hi < 0)
    )


def _donor_phrase(t: FindingTables, setting: tuple) -> str | None:
    p = _part(t.prediction, setting)
    p = p[p["predictor"] == DONOR] if len(p) else p
    if not len(p):
        return None
    r = p.iloc[0]
    if finite(r["vs_random_lo"]) and (r["vs_random_lo"] > 0 or r["vs_random_hi"] < 0):
        return (
            f"the {int(r['k'])} best donors among the other targets beat {int(r['k'])} random sources by "
            f"{claim(r['vs_random_pts'], r['vs_random_lo'], r['vs_random_hi'], 2, unit='')} points"
        )
    return None


def _no_claim_sentence(method: str, keys: list[str]) -> str:
    keys = list(dict.fromkeys(keys))
    shown = ", ".join(keys[: 2 * MAX_NAMED]) + (
        f" and {len(keys) - 2 * MAX_NAMED} more" if len(keys) > 2 * MAX_NAMED else ""
    )
    return f"{method}: no claim for {shown} (adjusted p above {ALPHA:g} or an interval that includes chance)."


def _reliability(r, name: str) -> str:
    if f"{name}_lo" in r.index and finite(r[f"{name}_lo"]):
        return interval(r[name], r[f"{name}_lo"], r[f"{name}_hi"])
    return num(r[name], 2, "n/a")


def _seeds_count(n) -> str:
    return "no number of seeds (no signal above the noise)" if math.isinf(n) else f"{int(n)}"


def _seeds_needed(r) -> str:
    """How many seeds a pair a reliability of 0.7 takes, within targets and overall, where measured."""
    within, overall = r["seeds_for_07_within"], r["seeds_for_07"]
    if pd.isna(within) or pd.isna(overall):
        return ""
    return (
        f" (0.7 takes {_seeds_count(within)} seeds a pair within targets, {_seeds_count(overall)} overall,"
        " by the measured noise)"
    )


def _noise_sentence(t: FindingTables) -> str | None:
    if t.noise is None or not len(t.noise):
        return None
    parts = []
    for _, r in t.noise.iterrows():
        label = setting_label(tuple(r[k] for k in SETTING_KEYS))
        if not r["measured"]:
            parts.append(f"{label} unmeasured (one seed per pair: a gain of a few points may be noise)")
            continue
        rel = f"reliability {_reliability(r, 'reliability')}"
        if "reliability_within" in r.index and finite(r["reliability_within"]):
            rel += f", within targets {_reliability(r, 'reliability_within')}"
        rel += _seeds_needed(r)
        parts.append(f"{label} seed sd {num(r['seed_sd_pts'], 2)} points, {rel}")
    return "Seed noise: " + "; ".join(parts) + "."


def _self_sentence(t: FindingTables) -> str | None:
    """What a source identical to the target gains (the bigger joint step alone), per setting."""
    sc = t.self_control
    if sc is None or not len(sc):
        return None
    parts = []
    for _, r in sc.iterrows():
        label = setting_label(tuple(r[k] for k in SETTING_KEYS))
        within = r["within_seed_sd"]
        note = "" if within is None or pd.isna(within) else (" (within" if within else " (beyond")
        note += f" one seed sd, {num(r['seed_sd_pts'], 2)})" if note else ""
        parts.append(f"{label} {r['self_gain_pts']:+.2f} +- {num(r['self_se_pts'], 2)}{note}")
    return "A source identical to the target (the self control) gains, in points: " + "; ".join(parts) + "."


def _kept_sentence(t: FindingTables) -> str | None:
    k = t.kept_start
    if k is None or not len(k):
        return None
    parts = [f"{r['method']} {int(r['kept'])} of {int(r['cells'])}" for _, r in k.iterrows()]
    return (
        "Tuned cells (single, transfer, multitask, multisource) whose prompt kept its start (it never moved;"
        " transfer cells marked in the panel): " + "; ".join(parts) + "."
    )


def findings(t: FindingTables) -> list[str]:
    """The findings' sentences, at most MAX_SENTENCES: the correction they hold to, per method setting
    the relations that rank sources or move the gain, per method the policies and donors that pay,
    one "no claim" sentence per method, then the seed noise and the cells that kept their start."""
    head = [
        f"Claims below hold at a {ALPHA:.0%} false discovery rate ({CORRECTION} within each method's "
        "per-target statistics, its model coefficients and its policies) with 95% task-bootstrap intervals."
    ]
    body, unsupported = [], {}
    for setting in _settings(t):
        phrases, _, none = _relations(t, setting)
        donor = _donor_phrase(t, setting)
        if phrases or donor:
            body.append(_relation_sentence(setting_label(setting), phrases + ([donor] if donor else [])))
        unsupported.setdefault(setting[0], []).extend(_name(t, k) for k in none)
    methods = list(dict.fromkeys([s[0] for s in _settings(t)] + _policy_methods(t)))
    for method in methods:
        phrases, none = _policy_phrases(t, method)
        if phrases:
            body.append(_relation_sentence(method, phrases))
        unsupported.setdefault(method, []).extend(none)
    body += [_no_claim_sentence(m, keys) for m, keys in unsupported.items() if keys]
    tail = [s for s in (_self_sentence(t), _noise_sentence(t), _kept_sentence(t)) if s]
    room = MAX_SENTENCES - len(head) - len(tail)
    if len(body) > room:
        body = body[: room - 1] + ["Further results are in the tables below."]
    if len(head) + len(body) + len(tail) == 1 and not _settings(t):
        return ["No transfer gains yet: nothing to claim."]
    return head + body + tail


def _policy_methods(t: FindingTables) -> list[str]:
    found = []
    for table in (t.multisource, t.groups):
        if table is not None:
            found += list(table["method"])
    return list(dict.fromkeys(found))
