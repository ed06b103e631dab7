#!/usr/bin/env python3
"""Character n-gram TF-IDF + logistic regression baseline for the sentiment corpus
(or any zhbert TSV split with ``--data-dir``: the labels are those of train.tsv).

Reads the split written by zhbert (``datasets/sentiment/{train,dev,test}.tsv``:
tab-separated, header ``text<TAB>label``, CSV quoting where needed, labels
``negative`` / ``positive``), fits

* ``TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)``
  on the training texts only (other settings at their sklearn defaults:
  lowercase=True, norm="l2", smooth_idf=True, min_df=1), and
* ``LogisticRegression(C=c, max_iter=2000)`` (lbfgs, L2) for each ``c`` of
  ``--c-values``, trained on train, scored on dev;

picks the C with the best dev accuracy (ties: best dev macro F1, then the
smaller C), and reports that model's (trained on train only, not refit on
train+dev) dev and test accuracy and macro F1.  Prints a summary and writes
it as JSON (``--out``), with the sklearn version and the sha256 of each data
file.  Usage::

    python3 benchmarks/tfidf_baseline.py [--data-dir datasets/sentiment] \\
        [--out benchmarks/results/tfidf_baseline.json]

Deterministic (lbfgs has no randomness); takes about 20 s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentiment_split import REPO, add_data_dir, display, label_names, read_split, sha256  # noqa: E402


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro"))}


def vectorizer() -> TfidfVectorizer:
    """The baseline's features (fitted on the training texts only)."""
    return TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir(ap)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/tfidf_baseline.json",
                    help="JSON result file")
    ap.add_argument("--c-values", type=float, nargs="+", default=[0.3, 1.0, 3.0, 10.0, 30.0],
                    help="inverse regularisation strengths tried on dev")
    args = ap.parse_args()

    files = {s: args.data_dir / f"{s}.tsv" for s in ("train", "dev", "test")}
    data = {}
    names = label_names(files["train"])
    for s, p in files.items():
        x, y = read_split(p, names)
        data[s] = (x, np.asarray(y, dtype=np.int64))
    for s, (x, y) in data.items():
        counts = ", ".join(f"{int((y == i).sum())} {n}" for i, n in enumerate(names))
        print(f"{s}: {len(x)} examples ({counts})")

    t0 = time.perf_counter()
    vec = vectorizer()
    x_train = vec.fit_transform(data["train"][0])
    x_dev = vec.transform(data["dev"][0])
    x_test = vec.transform(data["test"][0])
    t_vec = time.perf_counter() - t0
    print(f"tf-idf: {x_train.shape[1]} features ({t_vec:.1f} s)")

    sweep = []
    best = None
    for c in sorted(args.c_values):
        t0 = time.perf_counter()
        clf = LogisticRegression(C=c, max_iter=2000)
        clf.fit(x_train, data["train"][1])
        dev = scores(data["dev"][1], clf.predict(x_dev))
        entry = {"C": c, "dev": dev, "n_iter": int(clf.n_iter_[0]), "fit_seconds": time.perf_counter() - t0}
        sweep.append(entry)
        print(f"C={c:<6g} dev accuracy {dev['accuracy']:.4f}  macro F1 {dev['macro_f1']:.4f}  "
              f"({entry['n_iter']} iterations, {entry['fit_seconds']:.1f} s)")
        key = (dev["accuracy"], dev["macro_f1"])
        if best is None or key > best[0]:  # strict: ties keep the smaller C
            best = (key, c, clf, dev)

    _, c, clf, dev = best
    test = scores(data["test"][1], clf.predict(x_test))
    print(f"chosen C={c:g}: dev accuracy {dev['accuracy']:.4f} macro F1 {dev['macro_f1']:.4f}; "
          f"test accuracy {test['accuracy']:.4f} macro F1 {test['macro_f1']:.4f}")

    result = {
        "model": "TfidfVectorizer(analyzer='char', ngram_range=(1, 3), sublinear_tf=True) + "
                 "LogisticRegression(C, max_iter=2000, lbfgs); vectorizer and model fit on train",
        "selection": "C with the best dev accuracy (ties: dev macro F1, then smaller C)",
        "C": c,
        "dev": dev,
        "test": test,
        "n_features": int(x_train.shape[1]),
        "sweep": sweep,
        "examples": {s: len(x) for s, (x, _) in data.items()},
        "data_files": {s: {"path": display(p), "sha256": sha256(p)} for s, p in files.items()},
        "versions": {"sklearn": sklearn.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
