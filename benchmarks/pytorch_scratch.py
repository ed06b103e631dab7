#!/usr/bin/env python3
"""PyTorch reference for time-to-accuracy: train the `tiny-zh` preset from scratch.

`cargo xtask bench --tta` first trains zhbert's `tiny-zh` on the sentiment
corpus until dev accuracy reaches the target; its output folder is an HF model
folder. This script then builds the same model in PyTorch from that folder's
`config.json` (fresh random weights, HF's initialisation), with the same
tokenizer (`BertTokenizerFast.from_pretrained` on that folder: its n-gram
vocabulary and `tokenize_chinese_chars: false`), and trains it with the
preset's settings: AdamW lr 3e-4, weight decay 0.01 except biases and
LayerNorm, betas (0.9, 0.999), linear warmup over 10% of three epochs' steps
then linear decay, global-norm clipping at 1.0, batch 32, length-grouped
batches in shuffled order (zhbert's `group_by_length`: chunks of 50 batches
sorted by length, then the batches shuffled), max length from the folder's
`tokenizer_config.json` (128), dropout on, an evaluation on dev every 50 steps
(timed, as zhbert's are). It
stops at the first evaluation reaching `--target` and prints one JSON line:
the step, the seconds since training started, and the dev accuracy.

    python3 benchmarks/pytorch_scratch.py --like target/bench/tta-zhbert \
        --data datasets/sentiment --target 0.75
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scratch_recipes import accuracy, batches, pad  # noqa: E402
from sentiment_split import hf_adamw, read_split  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--like", type=Path, required=True, help="zhbert tiny-zh output folder (config.json, vocab.txt)")
    p.add_argument("--data", type=Path, required=True, help="folder with train.tsv and dev.tsv")
    p.add_argument("--target", type=float, default=0.75)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, help="default: model_max_length of the folder's tokenizer_config.json")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--output", type=Path, help="unused; accepted for symmetry with zhbert")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    tok = BertTokenizerFast.from_pretrained(args.like)
    if args.max_length is None:
        args.max_length = json.loads((args.like / "tokenizer_config.json").read_text())["model_max_length"]
    config = BertConfig.from_pretrained(args.like)
    model = BertForSequenceClassification(config)
    train_texts, train_labels = read_split(args.data / "train.tsv")
    dev_texts, dev_labels = read_split(args.data / "dev.tsv")
    enc = lambda texts: tok(texts, truncation=True, max_length=args.max_length)["input_ids"]
    train_ids, dev_ids = enc(train_texts), enc(dev_texts)

    opt = hf_adamw(model, args.lr, 0.01)
    steps_per_epoch = math.ceil(len(train_ids) / args.batch_size)
    total = args.epochs * steps_per_epoch
    sched = get_linear_schedule_with_warmup(opt, math.ceil(0.1 * total), total)

    rng = random.Random(args.seed)
    model.train()
    start = time.perf_counter()
    step = 0
    lengths = [len(x) for x in train_ids]
    for _ in range(args.epochs):
        for idx in batches(lengths, args.batch_size, True, rng):
            input_ids, attention = pad([train_ids[j] for j in idx])
            loss = model(input_ids=input_ids, attention_mask=attention,
                         labels=torch.tensor([train_labels[j] for j in idx])).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % args.eval_every == 0:
                acc = accuracy(model, dev_ids, dev_labels)
                print(f"step {step}: dev accuracy {acc:.4f} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
                if acc >= args.target:
                    print(json.dumps({"step": step, "seconds": time.perf_counter() - start, "dev_accuracy": acc}))
                    return
    print(json.dumps({"reached": False, "steps": step, "seconds": time.perf_counter() - start}))


if __name__ == "__main__":
    main()
