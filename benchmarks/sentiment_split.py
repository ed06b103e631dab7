"""Reading zhbert's sentiment split (`datasets/sentiment/*.tsv`) for the Python references."""

from __future__ import annotations

import csv
from pathlib import Path

LABELS = ["negative", "positive"]


def read_split(path: Path) -> tuple[list[str], list[int]]:
    """(texts, label ids) of a zhbert TSV file (header text<TAB>label)."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or rows[0] != ["text", "label"]:
        raise ValueError(f"{path}: expected a header 'text<TAB>label', got {rows[:1]}")
    texts, labels = [], []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[1] not in LABELS:
            raise ValueError(f"{path}: bad row {i}: {row!r}")
        texts.append(row[0])
        labels.append(LABELS.index(row[1]))
    return texts, labels
