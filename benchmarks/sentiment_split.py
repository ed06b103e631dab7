"""Shared by the Python references: reading zhbert's sentiment split
(`datasets/sentiment/*.tsv`), recording which files a result came from, and
HF's AdamW parameter groups."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

LABELS = ["negative", "positive"]


def add_data_dir(ap) -> None:
    """The `--data-dir` option of the scripts that read the split."""
    ap.add_argument("--data-dir", type=Path, default=REPO / "datasets/sentiment",
                    help="folder with train.tsv, dev.tsv and test.tsv")


def read_split(path: Path, names: list[str] = LABELS) -> tuple[list[str], list[int]]:
    """(texts, label ids) of a zhbert TSV file (header text<TAB>label); the
    ids index `names` (default: the sentiment labels)."""
    rows = read_rows(path)
    texts, labels = [], []
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != 2 or row[1] not in names:
            raise ValueError(f"{path}: bad row {i}: {row!r}")
        texts.append(row[0])
        labels.append(names.index(row[1]))
    return texts, labels


def label_names(path: Path) -> list[str]:
    """The labels of a zhbert TSV file, sorted (for any dataset, not only
    sentiment, whose labels come out in the order of `LABELS`)."""
    return sorted({row[1] for row in read_rows(path)[1:] if len(row) == 2})


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    if not rows or rows[0] != ["text", "label"]:
        raise ValueError(f"{path}: expected a header 'text<TAB>label', got {rows[:1]}")
    return rows


def display(path: Path) -> str:
    """PATH relative to the repository when it lies inside it."""
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hf_adamw(model, lr: float, weight_decay: float):
    """``torch.optim.AdamW`` with HF's groups: no weight decay on biases and
    LayerNorm weights."""
    import torch

    no_decay = lambda n: n.endswith("bias") or "LayerNorm.weight" in n  # noqa: E731
    named = list(model.named_parameters())
    return torch.optim.AdamW(
        [{"params": [p for n, p in named if not no_decay(n)], "weight_decay": weight_decay},
         {"params": [p for n, p in named if no_decay(n)], "weight_decay": 0.0}],
        lr=lr,
    )
