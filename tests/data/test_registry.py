import pytest

from melanoma.data.registry import REGISTRY, combo_label, get, parse_combo

ROOT_COMBOS = __import__("pathlib").Path(__file__).resolve().parents[2] / "params" / "paper_combinations.txt"


def test_every_spelling_resolves():
    for d in REGISTRY:
        assert get(d.short) is d and get(d.name) is d
        if d.letter:
            assert get(d.letter) is d


@pytest.mark.parametrize("text,expected", [
    ("A–D,I,J", ["isic2016", "isic2017", "isic2018", "isic2019", "mednode", "kaggle"]),
    ("A-D,I,J", ["isic2016", "isic2017", "isic2018", "isic2019", "mednode", "kaggle"]),
    ("ABCDIJ", ["isic2016", "isic2017", "isic2018", "isic2019", "mednode", "kaggle"]),
    ("[A-E,G]", ["isic2016", "isic2017", "isic2018", "isic2019", "isic2020", "ph2"]),
    ("ISIC2016+_7_point_criteria+PAD_UFES_20", ["isic2016", "derm7pt", "pad_ufes_20"]),
    ("HAM10000", ["ham10000"]),
    ("D", ["isic2019"]),
    ("isic2017+mednode", ["isic2017", "mednode"]),
])
def test_parse_combo(text, expected):
    assert parse_combo(text) == expected


@pytest.mark.parametrize("bad, message", [
    ("", "empty dataset combination; give letters like 'A-D,I'"),
    ("K", "unknown dataset 'K'; valid: A=isic2016 (ISIC2016)"),
    ("A-Z", "unknown dataset 'A-Z'; valid:"),
    ("D-A", "bad range D-A in combination 'D-A'"),
    ("ISIC2015", "unknown dataset 'ISIC2015'; valid:"),
    ("A,,Q", "unknown dataset 'Q'; valid:"),
])
def test_bad_combos_are_clear_errors(bad, message):
    """The error names what is wrong and lists what is valid."""
    with pytest.raises((ValueError, KeyError)) as e:
        parse_combo(bad)
    text = e.value.args[0] if isinstance(e.value, KeyError) else str(e.value)
    assert text.startswith(message), text


def test_combo_label_roundtrip():
    for text in ["A-D,I,J", "A,C-E", "A-E,G", "B", "A,E", "A-C,E,G"]:
        shorts = parse_combo(text)
        assert parse_combo(combo_label(shorts)) == shorts
    assert combo_label(parse_combo("A-D,I,J")) == "A–D,I,J"
    assert combo_label(parse_combo("A,C-E")) == "A,C–E"


def test_paper_combinations_all_parse():
    assert ROOT_COMBOS.is_file(), f"{ROOT_COMBOS} missing: the paper's 54 combinations"
    lines = [l for l in ROOT_COMBOS.read_text().splitlines() if l.strip()]
    assert len(lines) == 54
    parsed = {tuple(parse_combo(l)) for l in lines}
    assert len(parsed) == 54
