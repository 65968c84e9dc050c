"""The overview lines after the findings (terminal, summary.md, the top of the page): cell counts,
each method setting's mean gain, and which gains are missing and why."""

from __future__ import annotations

from analysis.assemble import Analysis, no_embeddings, setting_label
from analysis.gains import SETTING_KEYS
from analysis.text import finite, num


def overview_lines(a: Analysis) -> list[str]:
    """Counts of the study's cells against its grid, unreadable files, per method setting its mean
    gain, then the missing gains."""
    p = a.progress
    expected = p["expected"].dropna()
    total = f"{int(expected.sum())}" if len(expected) == len(p) else "?"
    missing = int(p["missing"].dropna().sum())
    backbone = f" (backbone {a.tables.backbone})" if a.tables.backbone else ""
    lines = [
        f"study {a.tables.name}{backbone}: {int(p['stored'].sum())} of {total} expected cells stored; "
        f"{int(p['ok'].sum())} ok, {int(p['failed'].sum())} failed, {a.nan_cells} NaN, {missing} missing"
    ]
    if a.tables.skipped:
        names = ", ".join(f"{s.name} ({s.reason})" for s in a.tables.skipped)
        lines.append(f"skipped {len(a.tables.skipped)} unreadable file(s): {names}")
    if not a.settings:
        methods = ", ".join(dict.fromkeys(a.singles["method"])) or "none"
        lines.append(f"no transfer cells: no gains to report (single runs of: {methods})")
    m = a.methods.set_index(SETTING_KEYS) if a.settings else None
    for setting in a.settings:
        r = m.loc[setting]
        share = f", {100 * r['share_positive']:.0f}% positive" if finite(r["share_positive"]) else ""
        lines.append(
            f"{setting_label(setting)}: mean gain {num(r['mean_gain_pts'], 2, 'n/a')} points over "
            f"{int(r['n_pairs'])} pairs{share}"
        )
    lines += missing_lines(a)
    if a.tables.embeddings is None:
        lines.append(no_embeddings(a.tables))
    return lines


def missing_lines(a: Analysis) -> list[str]:
    """Per method setting, the stored off-diagonal transfers without a gain and why; per method, the
    transfer cells its grid plans that are not stored yet (not run: not missing data)."""
    lines = []
    n_seeds = a.seed_table.groupby(SETTING_KEYS, dropna=False, sort=False)["seed"].nunique()
    rank = {s: i for i, s in enumerate(a.settings)}
    ordered = sorted(
        a.missing.iterrows(), key=lambda ir: rank.get(tuple(ir[1][k] for k in SETTING_KEYS), len(rank))
    )
    for _, r in ordered:
        setting = tuple(r[k] for k in SETTING_KEYS)
        seeds = int(n_seeds.get(setting, 0)) if setting in n_seeds.index else 0
        per = "pairs" if seeds == 1 else "(pair, seed) combinations"
        have = f"{int(r['present'])} of {int(r['expected'])} stored off-diagonal {per} have a gain"
        text = f"{setting_label(setting)}: {have}"
        reasons = [
            (r["transfer_failed"], "transfer failed or NaN"),
            (r["single_absent"], "single run of the target not stored"),
            (r["single_failed"], "single run failed or NaN"),
        ]
        why = ", ".join(f"{int(n)} {w}" for n, w in reasons if n)
        lines.append(
            text + (f"; {int(r['missing'])} without one ({why})" if r["missing"] else "; none without one")
        )
    p = a.progress
    for _, r in p[p["stage"] == "transfer"].iterrows():
        if r["stored"] == 0:
            lines.append(
                f"{r['method']}: no transfer cells stored yet ({num(r['expected'], 0, '?')} expected)"
            )
        elif finite(r["missing"]) and r["missing"] > 0:
            lines.append(
                f"{r['method']}: {int(r['missing'])} of the grid's {int(r['expected'])} transfer cells "
                "not run yet"
            )
    return lines
