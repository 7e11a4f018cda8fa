"""The book's tables and texts (melanoma.report.tables); the build is test_book.py, the end-to-end
build test_workflow.py."""

import math

from melanoma.report.summary import fmt, fmt_ci
from melanoma.report.tables import paper_tables


def test_formatting():
    assert fmt(0.8384) == "83.8%"
    assert fmt(float("nan")) == "–"
    assert fmt(0.08321, pct=False) == "0.0832"
    assert fmt_ci(0.5, 0.4, 0.6) == "50.0% [40.0%, 60.0%]"
    assert fmt_ci(0.5, math.nan, 0.6) == "50.0%"


def test_paper_reference_tables_render():
    t = paper_tables()
    assert "Reported in the paper, on real data" in t["table1"]
    assert "83.8% / 85.3%" in t["table1"]          # DenseNet201 on ISIC 2017, precision
    assert "90.7%" in t["table2"]                    # EfficientNetB1, private leaderboard
    assert "0.0832" in t["table3"] and "0.0478" in t["table3"]
    assert t["table1"].count("\n| ") == 13          # header + 12 rows


def test_aurc_table_without_bootstrap_columns():
    """A grid whose runs had no bootstrap (or no rejection at all) still renders the AURC table."""
    import pandas as pd

    from melanoma.report.tables import aurc_table

    base = {"phase": ["before", "after"], "eval_set": ["isic2017"] * 2, "model": ["m"] * 2,
            "train": ["B"] * 2, "run_id": ["m__B"] * 2}
    assert aurc_table(pd.DataFrame(base)) == "_No AURC results._\n"
    t = aurc_table(pd.DataFrame({**base, "aurc": [0.1234, 0.1]}))
    assert "| ISIC2017 | m | [B] | 0.1234 | – | `m__B` |" in t
    t = aurc_table(pd.DataFrame({**base, "aurc": [0.1234, 0.1], "aurc_low": [0.1, 0.1],
                                 "aurc_high": [0.2, 0.2], "eaurc": [0.05, 0.05]}))
    assert "0.1" in t and "0.2" in t


def test_table1_cells_carry_bootstrap_brackets():
    import pandas as pd

    from melanoma.report.tables import _both_ci

    b = pd.Series({"precision": 0.5, "precision_low": 0.4, "precision_high": 0.6})
    a = pd.Series({"precision": 0.7, "precision_low": float("nan"), "precision_high": 0.8})
    assert _both_ci(b, a, "precision") == "50.0% / 70.0%<br><small>[40.0%, 60.0%] / –</small>"


def test_table2_says_a_word_on_an_auc_below_chance():
    import pandas as pd

    from melanoma.report.tables import table2_notes

    lb = pd.DataFrame({"run_id": ["resnet18__E", "m__B"], "auc": [0.073, 0.91], "n": [60, 60],
                       "n_melanoma": [5, 5], "synthetic": [True, True]})
    t = table2_notes(lb)
    assert "60 held-out images, 5 of them melanomas (SYNTHETIC labels)" in t
    assert "`resnet18__E`: AUC 7.3%, below 50 %" in t and "degenerate" in t and "SYNTHETIC" in t
    assert "m__B" not in t
    assert "below 50" not in table2_notes(lb[lb["auc"] > 0.5])
