"""The dataset registry: letters A–J (as in the paper's table notes), names, and combinations.

Every release has three spellings that all resolve to one :class:`DatasetInfo`:

* the letter of the paper's tables (``A`` … ``J``; HAM10000 has none),
* the name used in ``paper_combinations.txt`` (``ISIC2016`` … ``_7_point_criteria``, ``KaggleMB``),
* a short lowercase name (``isic2016`` … ``derm7pt``, ``kaggle``, ``ham10000``), which is also the
  folder name under a data root and under a work directory.

>>> parse_combo("A–C,I")
['isic2016', 'isic2017', 'isic2018', 'mednode']
>>> parse_combo("ISIC2016+_7_point_criteria")
['isic2016', 'derm7pt']
>>> combo_label(["isic2016", "isic2017", "isic2018", "mednode"])
'A–C,I'
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetInfo:
    short: str          # folder name, CLI name
    name: str           # name in paper_combinations.txt
    letter: str | None  # letter in the paper's tables
    title: str          # human title
    kind: str           # "dermoscopic" or "clinical"
    source: str         # where a user downloads it (README)


REGISTRY: tuple[DatasetInfo, ...] = (
    DatasetInfo("isic2016", "ISIC2016", "A", "ISIC 2016 (Part 3)", "dermoscopic",
                "ISIC challenge data page, 2016 Part 3"),
    DatasetInfo("isic2017", "ISIC2017", "B", "ISIC 2017 (Part 3)", "dermoscopic",
                "ISIC challenge data page, 2017 Part 3"),
    DatasetInfo("isic2018", "ISIC2018", "C", "ISIC 2018 (Task 3)", "dermoscopic",
                "ISIC challenge data page, 2018 Task 3"),
    DatasetInfo("isic2019", "ISIC2019", "D", "ISIC 2019", "dermoscopic",
                "ISIC challenge data page, 2019"),
    DatasetInfo("isic2020", "ISIC2020", "E", "ISIC 2020 (SIIM-ISIC)", "dermoscopic",
                "ISIC challenge data page, 2020 (JPEG variant)"),
    DatasetInfo("derm7pt", "_7_point_criteria", "F", "7-point criteria (derm7pt)", "dermoscopic",
                "derm.cs.sfu.ca (registration)"),
    DatasetInfo("ph2", "PH2", "G", "PH2", "dermoscopic", "ADDI project page (registration)"),
    DatasetInfo("pad_ufes_20", "PAD_UFES_20", "H", "PAD-UFES-20", "clinical", "Mendeley Data"),
    DatasetInfo("mednode", "MEDNODE", "I", "MED-NODE", "clinical", "University of Groningen"),
    DatasetInfo("kaggle", "KaggleMB", "J", "Kaggle skin cancer: malignant vs benign (fanconic)",
                "dermoscopic", "Kaggle (fanconic)"),
    DatasetInfo("ham10000", "HAM10000", None, "HAM10000", "dermoscopic", "Harvard Dataverse"),
)

SHORT_NAMES: tuple[str, ...] = tuple(d.short for d in REGISTRY)
_BY_KEY: dict[str, DatasetInfo] = {}
for _d in REGISTRY:
    for _k in (_d.short, _d.name, _d.name.lower()) + ((_d.letter,) if _d.letter else ()):
        _BY_KEY[_k] = _d
_BY_KEY.update({"7point": _BY_KEY["derm7pt"], "7-point": _BY_KEY["derm7pt"],
                "pad-ufes-20": _BY_KEY["pad_ufes_20"], "kagglemb": _BY_KEY["kaggle"],
                "med-node": _BY_KEY["mednode"]})
_LETTERS = [d.letter for d in REGISTRY if d.letter]


def get(key: str) -> DatasetInfo:
    """Resolve a letter, a paper name or a short name to its :class:`DatasetInfo`."""
    k = key.strip()
    found = _BY_KEY.get(k) or _BY_KEY.get(k.lower())
    if found is None:
        valid = ", ".join(f"{d.letter or '-'}={d.short} ({d.name})" for d in REGISTRY)
        raise KeyError(f"unknown dataset {key!r}; valid: {valid}")
    return found


def parse_combo(text: str) -> list[str]:
    """Parse a training combination into short names, in registry order, without repeats.

    Accepted spellings: ``"A–D,I,J"`` (ranges with ``-`` or ``–``), ``"ABCDIJ"``, ``"[A-E,G]"``,
    ``"ISIC2016+ISIC2017"`` (paper names joined by ``+``), ``"isic2016+mednode"``, ``"HAM10000"``.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError("empty dataset combination; give letters like 'A-D,I' or names joined by '+'")
    s = text.strip().strip("[]").replace("–", "-").replace("—", "-").replace(" ", "")
    out: list[str] = []
    if "+" in s or s in _BY_KEY or s.lower() in _BY_KEY and len(s) > 1:
        for part in (p for p in s.split("+") if p):
            out.append(get(part).short)
    elif re.fullmatch(r"[A-Ja-j,\-]+", s):
        for chunk in (c for c in s.upper().split(",") if c):
            for m in re.finditer(r"([A-J])(?:-([A-J]))?", chunk):
                a, b = m.group(1), m.group(2) or m.group(1)
                if b < a:
                    raise ValueError(f"bad range {a}-{b} in combination {text!r}")
                out.extend(get(x).short for x in _LETTERS if a <= x <= b)
            if re.sub(r"[A-J](-[A-J])?", "", chunk):
                raise ValueError(f"cannot parse {chunk!r} in combination {text!r}; letters are A-J")
    else:
        for part in (p for p in s.split(",") if p):
            out.append(get(part).short)
    order = {n: i for i, n in enumerate(SHORT_NAMES)}
    return sorted(set(out), key=order.__getitem__)


def combo_label(shorts: list[str]) -> str:
    """The paper's compact letter notation (``A–C,I``); HAM10000 is spelt out."""
    infos = sorted((get(s) for s in shorts), key=lambda d: SHORT_NAMES.index(d.short))
    letters = [d.letter for d in infos if d.letter]
    parts: list[str] = []
    i = 0
    while i < len(letters):
        j = i
        while j + 1 < len(letters) and ord(letters[j + 1]) == ord(letters[j]) + 1:
            j += 1
        parts.append(letters[i] if j - i < 2 else f"{letters[i]}–{letters[j]}")
        if j - i == 1:
            parts.append(letters[j])
        i = j + 1
    parts += [d.name for d in infos if not d.letter]
    return ",".join(parts)
