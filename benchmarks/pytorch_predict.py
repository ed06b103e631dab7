#!/usr/bin/env python3
"""PyTorch reference for ``zhbert predict`` as a process: classify a file of texts.

What a Python user runs to classify a file with ``transformers``: read the
texts (one per line), tokenize them (``BertTokenizerFast``, truncation at
``--max-length``), run ``BertForSequenceClassification`` in eval mode under
``torch.inference_mode()`` over batches of ``--batch-size`` texts taken in
order of length (as ``zhbert predict`` groups them), softmax, and write one
JSON line per text in input order: ``{"label": ..., "score": ...}``.

``cargo xtask bench --only process`` times it as a whole process (start,
imports, loading, tokenizing, inference, writing) against ``zhbert predict``
on the same file.  A model folder without a trained head gets a fresh one
(``--num-labels``), as ``zhbert predict --allow-fresh-head`` does.

Usage::

    python3 benchmarks/pytorch_predict.py --model target/assets/minilm \\
        --input texts.txt --output preds.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import transformers
from transformers import BertForSequenceClassification, BertTokenizerFast


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--input", type=Path, required=True, help="texts, one per line")
    ap.add_argument("--output", type=Path, required=True, help="JSONL predictions")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--num-labels", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    transformers.set_seed(0)

    texts = [t for t in args.input.read_text(encoding="utf-8").splitlines() if t.strip()]
    tokenizer = BertTokenizerFast.from_pretrained(args.model)
    model = BertForSequenceClassification.from_pretrained(args.model, num_labels=args.num_labels)
    model.eval()
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    enc = tokenizer(texts, truncation=True, max_length=args.max_length)
    order = sorted(range(len(texts)), key=lambda i: len(enc["input_ids"][i]))
    probs: list[torch.Tensor | None] = [None] * len(texts)
    with torch.inference_mode():
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            batch = tokenizer.pad({k: [enc[k][i] for i in idx] for k in enc.keys()},
                                  padding="longest", return_tensors="pt")
            logits = model(**batch).logits
            for i, p in zip(idx, torch.softmax(logits, dim=-1)):
                probs[i] = p
    with open(args.output, "w", encoding="utf-8") as f:
        for p in probs:
            best = int(torch.argmax(p))
            f.write(json.dumps({"label": labels[best], "score": float(p[best])},
                               ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
