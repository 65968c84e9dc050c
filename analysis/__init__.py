"""Pure functions on result tables and arrays: gains, similarities, statistics, and the report."""

from analysis.adjust import adjust_within, bh_adjust
from analysis.assemble import Analysis, analyse
from analysis.combine import groups_table, multisource_table, source_prediction
from analysis.decompose import Decomposition, additive_fit, decompose, residual_spearman
from analysis.findings import FindingTables, findings
from analysis.gains import (
    gain_matrix,
    gain_summary,
    missing_counts,
    seed_gains,
    single_values,
    stage_values,
    task_names,
    zeroshot_values,
)
from analysis.load import load_study
from analysis.model import ModelFit, crossed_effects
from analysis.noise import Reliability, SeedNoise, cell_errors, reliability_as_analysed, seed_noise
from analysis.order import average_linkage_order, profile_distance, similarity_order, task_order
from analysis.pertarget import per_target_summary, per_target_table
from analysis.ranking import ndcg_at_k, random_ranking, rank_sources, ranking_summary, regret_at_k
from analysis.relate import similarity_correlations
from analysis.similarity import (
    arrays_by_task,
    cosine_matrix,
    label_best_match,
    label_similarity,
    prompt_similarity,
    visual_similarity,
)
from analysis.stats import (
    Estimate,
    offdiag_pairs,
    partial_correlations,
    partial_spearman,
    rankdata,
    regress,
    spearman,
    spearman_ci,
    task_bootstrap,
)
from analysis.summary import best_sources, method_summary

__all__ = [
    "Analysis",
    "FindingTables",
    "adjust_within",
    "bh_adjust",
    "findings",
    "Decomposition",
    "ModelFit",
    "SeedNoise",
    "analyse",
    "cell_errors",
    "crossed_effects",
    "load_study",
    "per_target_summary",
    "per_target_table",
    "Reliability",
    "reliability_as_analysed",
    "seed_noise",
    "Estimate",
    "additive_fit",
    "arrays_by_task",
    "average_linkage_order",
    "best_sources",
    "cosine_matrix",
    "decompose",
    "gain_matrix",
    "gain_summary",
    "groups_table",
    "label_best_match",
    "label_similarity",
    "method_summary",
    "missing_counts",
    "multisource_table",
    "ndcg_at_k",
    "offdiag_pairs",
    "partial_correlations",
    "partial_spearman",
    "profile_distance",
    "prompt_similarity",
    "random_ranking",
    "rank_sources",
    "ranking_summary",
    "rankdata",
    "regress",
    "regret_at_k",
    "residual_spearman",
    "seed_gains",
    "similarity_correlations",
    "similarity_order",
    "single_values",
    "source_prediction",
    "spearman",
    "spearman_ci",
    "stage_values",
    "task_bootstrap",
    "task_names",
    "task_order",
    "visual_similarity",
    "zeroshot_values",
]
