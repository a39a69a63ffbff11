"""Tables as markdown for reading: accuracies as percentages, numbers rounded. CSV files keep
full precision; this is only for the terminal and the report's .md files."""

from __future__ import annotations

import math
import numbers

import pandas as pd


def markdown(table: pd.DataFrame, percent: list[str] | None = None, share: list[str] | None = None) -> str:
    """`percent`: columns in the metric's units, shown x100 (default: ``table.attrs["percent"]``);
    `share`: fractions of a whole, shown x100 with one decimal (default: ``attrs["share"]``)."""
    percent = table.attrs.get("percent", []) if percent is None else percent
    share = table.attrs.get("share", []) if share is None else share
    headers = [f"{c} (%)" if c in percent or c in share else str(c) for c in table.columns]
    rows = [[_cell(v, c, percent, share) for c, v in zip(table.columns, row)]
            for row in table.itertuples(index=False)]
    numeric = [pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
               and table[c].notna().any() for c in table.columns]
    widths = [max([len(h), 3, *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells):
        return "| " + " | ".join(c.rjust(w) if num else c.ljust(w)
                                 for c, w, num in zip(cells, widths, numeric)) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _cell(value, column: str, percent: list[str], share: list[str]) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return str(value).replace("|", "\\|")
    if isinstance(value, numbers.Integral) and column not in percent and column not in share:
        return str(value)
    value = float(value)
    if column in percent:
        return f"{100 * value:.2f}"
    if column in share:
        return f"{100 * value:.1f}"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if column.endswith("_p") or column.endswith("_holm"):
        return f"{value:.2e}" if value < 1e-3 else f"{value:.3f}"
    if column.startswith("p_") or column == "kappa":
        return f"{value:.3f}"
    if (column == "n" or column.startswith("n_") or column == "df") and float(value).is_integer():
        return str(int(value))  # counts that are floats only because a NaN or inf shares the column
    return f"{value:.3g}"
