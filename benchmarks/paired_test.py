#!/usr/bin/env python3
"""Paired comparison of zhbert models with the TF-IDF baseline, example by example.

Two classifiers scored on the same 1,736 reviews differ by a handful of
examples; whether such a difference means anything is what a paired test
tells. For every model given (a run's dev and test predictions) and for dev,
test and the two together, this reports:

* both accuracies and their difference (model - baseline);
* ``b``: examples the baseline gets right and the model wrong; ``c``: the
  reverse (only these decide the difference: (c - b) / n);
* McNemar's exact two-sided p-value: the binomial test of ``c`` out of
  ``b + c`` at 1/2 (no difference in error rates);
* a 95% paired bootstrap interval of the difference (10,000 resamples of the
  examples, numpy seed 0 for every comparison).

Then, over the models (seeds of one recipe), the mean difference and its
standard error: the seed-to-seed spread, which the per-example tests do not
see.

The baseline is ``tfidf_baseline.py``'s model at the C it chose
(``results/tfidf_baseline.json``), refitted here (deterministic). Predictions
are ``zhbert predict`` JSONL files, one line per row of the split, in order::

    zhbert predict --model runs/demo-tiny-zh --input datasets/sentiment/dev.tsv --output dev.jsonl
    zhbert predict --model runs/demo-tiny-zh --input datasets/sentiment/test.tsv --output test.jsonl
    python3 benchmarks/paired_test.py --model seed42 dev.jsonl test.jsonl [--model ...] \\
        [--out benchmarks/results/paired.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import binomtest
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentiment_split import LABELS, REPO, add_data_dir, display, read_split, sha256  # noqa: E402
from tfidf_baseline import vectorizer  # noqa: E402

SPLITS = ("dev", "test")


def read_predictions(path: Path, n: int) -> np.ndarray:
    """Label ids of a `zhbert predict` JSONL file that must have `n` lines."""
    ids = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            label = json.loads(line)["label"]
            if label not in LABELS:
                raise ValueError(f"{path}:{i}: label {label!r} is not one of {LABELS}")
            ids.append(LABELS.index(label))
    if len(ids) != n:
        raise ValueError(f"{path}: {len(ids)} predictions for a split of {n} examples")
    return np.asarray(ids)


def compare(gold: np.ndarray, baseline: np.ndarray, model: np.ndarray) -> dict:
    """The paired figures of `model` against `baseline` on labels `gold`
    (the bootstrap seeded afresh, so a model's figures do not depend on the
    others given)."""
    base_right = baseline == gold
    model_right = model == gold
    b = int((base_right & ~model_right).sum())
    c = int((model_right & ~base_right).sum())
    p = binomtest(c, b + c, 0.5).pvalue if b + c else 1.0
    diff = model_right.astype(np.float64) - base_right.astype(np.float64)
    samples = np.random.default_rng(0).integers(0, len(gold), size=(10_000, len(gold)))
    boot = diff[samples].mean(axis=1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "examples": int(len(gold)),
        "baseline_accuracy": round(float(base_right.mean()), 4),
        "model_accuracy": round(float(model_right.mean()), 4),
        "difference": round(float(diff.mean()), 4),
        "baseline_right_model_wrong": b,
        "model_right_baseline_wrong": c,
        "mcnemar_exact_p": round(float(p), 4),
        "bootstrap_95": [round(float(lo), 4), round(float(hi), 4)],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_data_dir(ap)
    ap.add_argument("--baseline", type=Path, default=REPO / "benchmarks/results/tfidf_baseline.json",
                    help="tfidf_baseline.py's result (its chosen C)")
    ap.add_argument("--model", nargs=3, action="append", required=True, metavar=("NAME", "DEV", "TEST"),
                    help="a model's name and its dev and test predictions (JSONL); repeat for more")
    ap.add_argument("--out", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args()

    files = {s: args.data_dir / f"{s}.tsv" for s in ("train", *SPLITS)}
    data = {s: read_split(p) for s, p in files.items()}
    c_value = json.loads(args.baseline.read_text(encoding="utf-8"))["C"]
    vec = vectorizer()
    clf = LogisticRegression(C=c_value, max_iter=2000).fit(vec.fit_transform(data["train"][0]), data["train"][1])
    gold = {s: np.asarray(data[s][1]) for s in SPLITS}
    baseline = {s: clf.predict(vec.transform(data[s][0])) for s in SPLITS}
    gold["dev+test"] = np.concatenate([gold[s] for s in SPLITS])
    baseline["dev+test"] = np.concatenate([baseline[s] for s in SPLITS])

    runs = []
    for name, dev_path, test_path in args.model:
        preds = {s: read_predictions(Path(p), len(gold[s])) for s, p in zip(SPLITS, (dev_path, test_path))}
        preds["dev+test"] = np.concatenate([preds[s] for s in SPLITS])
        figures = {s: compare(gold[s], baseline[s], preds[s]) for s in gold}
        runs.append({"model": name, **figures})
        for s, f in figures.items():
            print(f"{name:>10} {s:>8}: model {f['model_accuracy']:.4f} baseline {f['baseline_accuracy']:.4f} "
                  f"diff {f['difference']:+.4f} (b {f['baseline_right_model_wrong']}, "
                  f"c {f['model_right_baseline_wrong']}) McNemar p {f['mcnemar_exact_p']:.3f} "
                  f"95% [{f['bootstrap_95'][0]:+.4f}, {f['bootstrap_95'][1]:+.4f}]")

    over_models = {}
    for s in gold:
        d = np.asarray([r[s]["difference"] for r in runs])
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
        over_models[s] = {"mean_difference": round(float(d.mean()), 4),
                          "standard_error": None if se is None else round(se, 4)}
        print(f"{len(d)} models {s:>8}: mean difference {d.mean():+.4f}"
              + ("" if se is None else f" ± {se:.4f} (standard error over the models)"))

    if args.out:
        result = {
            "baseline": f"tfidf_baseline.py's model at C={c_value:g}, refitted on train",
            "runs": runs,
            "over_models": over_models,
            "data_files": {s: {"path": display(p), "sha256": sha256(p)} for s, p in files.items()},
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {display(args.out)}")


if __name__ == "__main__":
    sys.exit(main())
