#!/usr/bin/env python3
"""Is a naive-Bayes-weighted teacher better than the TF-IDF baseline beyond
this one split? 5-fold stratified cross-validation over the whole sentiment
corpus (train + dev + test of ``datasets/sentiment``, 17,363 reviews), so
every model trains on as many reviews as the split's train set (80%).

Two models per fold, both ``TfidfVectorizer(analyzer="char", ngram_range=(1,
3), sublinear_tf=True)`` + ``LogisticRegression(C=10)`` as
``tfidf_baseline.py``; the second scales each feature by the absolute
naive-Bayes log-count ratio of the fold's training part (NBSVM, Wang &
Manning 2012; ``scratch_recipes.nb_ratio``, which ``--teacher nb`` uses).
Prints each fold's accuracy and the means (2026-11-26: plain 0.8516, NB
0.8564; NB ahead in all five folds)::

    python3 benchmarks/teacher_cv.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_recipes import nb_ratio  # noqa: E402
from sentiment_split import REPO, read_split  # noqa: E402


def main() -> None:
    texts: list[str] = []
    labels: list[int] = []
    for split in ("train", "dev", "test"):
        x, y = read_split(REPO / "datasets/sentiment" / f"{split}.tsv")
        texts += x
        labels += y
    x_all = np.array(texts, dtype=object)
    y_all = np.array(labels)
    scores: dict[str, list[float]] = {"plain": [], "nb": []}
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=123).split(x_all, y_all):
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        x_fit, x_held = vec.fit_transform(x_all[fit]), vec.transform(x_all[held])
        scale = nb_ratio(x_fit, y_all[fit])
        for name, (a, b) in {
            "plain": (x_fit, x_held),
            "nb": (x_fit.multiply(scale).tocsr(), x_held.multiply(scale).tocsr()),
        }.items():
            model = LogisticRegression(C=10.0, max_iter=3000).fit(a, y_all[fit])
            scores[name].append(float((model.predict(b) == y_all[held]).mean()))
        print({k: round(v[-1], 4) for k, v in scores.items()}, flush=True)
    print("mean", {k: round(float(np.mean(v)), 4) for k, v in scores.items()})


if __name__ == "__main__":
    main()
