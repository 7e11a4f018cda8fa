"""Report/book helpers (the end-to-end build is in test_workflow.py)."""

import math

from melanoma.book import paper_tables
from melanoma.report import fmt, fmt_ci


def test_formatting():
    assert fmt(0.8384) == "83.8%"
    assert fmt(float("nan")) == "–"
    assert fmt(0.08321, pct=False) == "0.0832"
    assert fmt_ci(0.5, 0.4, 0.6) == "50.0% [40.0%, 60.0%]"
    assert fmt_ci(0.5, math.nan, 0.6) == "50.0%"


def test_paper_reference_tables_render():
    t = paper_tables()
    assert "Reported in the paper" in t["table1"]
    assert "83.8% / 85.3%" in t["table1"]          # DenseNet201 on ISIC 2017, precision
    assert "90.7%" in t["table2"]                    # EfficientNetB1, private leaderboard
    assert "0.0832" in t["table3"] and "0.0478" in t["table3"]
    assert t["table1"].count("\n| ") == 13          # header + 12 rows


def test_aurc_table_without_bootstrap_columns():
    """A grid whose runs had no bootstrap (or no rejection at all) still renders the AURC table."""
    import pandas as pd

    from melanoma.book import aurc_table

    base = {"phase": ["before", "after"], "eval_set": ["isic2017"] * 2, "model": ["m"] * 2,
            "train": ["B"] * 2, "run_id": ["m__B"] * 2}
    assert aurc_table(pd.DataFrame(base)) == "_No AURC results._\n"
    t = aurc_table(pd.DataFrame({**base, "aurc": [0.1234, 0.1]}))
    assert "| ISIC2017 | m | [B] | 0.1234 | – | `m__B` |" in t
    t = aurc_table(pd.DataFrame({**base, "aurc": [0.1234, 0.1], "aurc_low": [0.1, 0.1],
                                 "aurc_high": [0.2, 0.2], "eaurc": [0.05, 0.05]}))
    assert "0.1" in t and "0.2" in t
