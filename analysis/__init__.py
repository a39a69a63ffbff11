"""Statistics of many seeded runs: what a sweep's results.json files say, with their noise.

    from analysis import collect, summarize, compare
    df = collect("multirun/widths")
    summarize(df)                       # one row per config
    compare(df, by="model.hidden")      # every pair of widths
"""

from analysis.collect import collect, complete, problems
from analysis.errors import AnalysisError, NoCompleteRuns
from analysis.report import report
from analysis.tables import churn_matrices, compare, expected_max, noise_floor, optimism, stability, summarize
from analysis.variance import variance

__all__ = [
           "AnalysisError",
           "NoCompleteRuns",
           "churn_matrices",
           "collect",
           "compare",
           "complete",
           "expected_max",
           "noise_floor",
           "optimism",
           "problems",
           "report",
           "stability",
           "summarize",
           "variance",
]
