#!/usr/bin/env python3
"""The PyTorch side of `cargo xtask bench`: the same workloads as `zhbert bench`,
with the same arguments, printing one JSON line with the same fields.

    python3 benchmarks/pytorch_bench.py train --model target/assets/minilm --steps 5

Workloads:
  matmul    GFLOP/s of a square f32 matmul (torch.matmul)
  tokenize  texts/s of BertTokenizerFast batch encoding, truncation and padding to the longest
  infer     sequences/s of BertForSequenceClassification under torch.inference_mode
            (random full-length inputs, or --texts: real texts in file order, batches
            padded to their longest, tokenization included, as a plain HF loop does)
  train     sequences/s of training steps: forward, backward, clip_grad_norm_(1.0), AdamW

Eager mode, torch's default intra-op threads (one per core), like zhbert. float32 by
default; `--precision bf16|f16` runs the model under `torch.autocast`, as
`zhbert bench --precision` does (no loss scaling: random data never overflows).
`--device cuda` runs on the GPU (zhbert's `--backend cuda`) and adds the caching
allocator's peak (`peak_gpu_mb`). `infer --quantize int8` times
`torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, torch.qint8)` (fbgemm on
x86: int8 weights per tensor, activations quantized per batch with reduce_range), as
`zhbert bench infer --quantize int8` times zhbert's int8 kernels.
"""

import contextlib

import argparse
import json
import os
import resource
import time
import warnings

import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sentiment_split import hf_adamw  # noqa: E402

BERT_BASE_SHAPE = "bert-base-chinese-shape"


def peak_rss_mb():
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def read_lines(path, limit):
    with open(path, encoding="utf-8") as f:
        lines = [l.strip() for l in f]
    return [l for l in lines if l][:limit]


def forward_flops(config, length):
    """Forward FLOPs of one sequence, counted as zhbert's bench.rs does."""
    h, f, l = config.hidden_size, config.intermediate_size, length
    per_layer = 2 * l * (4 * h * h + 2 * h * f) + 4 * l * l * h
    return config.num_hidden_layers * per_layer + 2 * h * h + 2 * h * config.num_labels


def model_of(name):
    if name == BERT_BASE_SHAPE:
        config = BertConfig(vocab_size=21128, num_labels=2)
        return BertForSequenceClassification(config), config
    model = BertForSequenceClassification.from_pretrained(name, num_labels=2)
    return model, model.config


def tokenizer_of(path):
    if os.path.isdir(path):
        return BertTokenizerFast.from_pretrained(path)
    return BertTokenizerFast(vocab_file=path)


def random_batch(config, args):
    g = torch.Generator().manual_seed(0)
    shape = (args.batch_size, args.seq_len)
    batch = {
        "input_ids": torch.randint(1, config.vocab_size, shape, generator=g),
        "token_type_ids": torch.zeros(shape, dtype=torch.long),
        "attention_mask": torch.ones(shape, dtype=torch.long),
    }
    return {k: v.to(args.device) for k, v in batch.items()}


def autocast(args):
    """``torch.autocast`` for --precision bf16|f16; nothing for fp32."""
    if args.precision == "fp32":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[args.precision]
    return torch.autocast(device_type=args.device, dtype=dtype)


def model_fields(args, config):
    return {
        "model": args.model,
        "layers": config.num_hidden_layers,
        "hidden": config.hidden_size,
        "vocab": config.vocab_size,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "steps": args.steps,
        "precision": args.precision,
        "quantize": getattr(args, "quantize", None),
    }


def timed(args, run):
    """Seconds for args.steps calls of run, after args.warmup untimed ones."""
    for _ in range(args.warmup):
        run()
    start = time.perf_counter()
    for _ in range(args.steps):
        run()
    return time.perf_counter() - start


def record_throughput(out, workload, secs, args, config, passes):
    """Speed fields of a fixed-shape workload, as zhbert's bench.rs writes them."""
    seqs = args.steps * args.batch_size
    out.update(
        workload=workload,
        seconds=secs,
        items_per_second=seqs / secs,
        gflops=passes * seqs * forward_flops(config, args.seq_len) / secs / 1e9,
    )
    return out


def matmul(args):
    n = args.size
    a, b = torch.randn(n, n, device=args.device), torch.randn(n, n, device=args.device)
    (a @ b)[0, 0].item()
    start = time.perf_counter()
    for _ in range(args.steps):
        (a @ b)[0, 0].item()
    secs = time.perf_counter() - start
    return {
        "workload": "matmul",
        "size": n,
        "steps": args.steps,
        "seconds": secs,
        "gflops": 2 * n**3 * args.steps / secs / 1e9,
    }


def tokenize(args):
    tok = tokenizer_of(args.vocab)
    texts = read_lines(args.texts, args.limit)
    run = lambda: tok(texts, truncation=True, max_length=args.max_length, padding=True)
    tokens = int(sum(sum(m) for m in run()["attention_mask"]))
    start = time.perf_counter()
    for _ in range(args.steps):
        run()
    secs = time.perf_counter() - start
    return {
        "workload": "tokenize",
        "texts": len(texts),
        "tokens": tokens,
        "steps": args.steps,
        "seconds": secs,
        "items_per_second": len(texts) * args.steps / secs,
    }


def infer(args):
    model, config = model_of(args.model)
    model.to(args.device).eval()
    if args.quantize == "int8":
        assert args.device == "cpu" and args.precision == "fp32", "--quantize int8 is for the CPU"
        with warnings.catch_warnings():  # torch.ao.quantization's deprecation notices
            warnings.simplefilter("ignore")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    out = model_fields(args, config)
    if args.texts:
        assert args.device == "cpu" and args.precision == "fp32", "--texts times fp32 on the CPU only"
        tok = tokenizer_of(args.model)
        texts = read_lines(args.texts, args.limit)

        def run(texts):
            for i in range(0, len(texts), args.batch_size):
                enc = tok(
                    texts[i : i + args.batch_size],
                    truncation=True,
                    max_length=args.seq_len,
                    padding=True,
                    return_tensors="pt",
                )
                model(**enc).logits.softmax(-1).tolist()

        with torch.inference_mode():
            for _ in range(args.warmup):
                run(texts[: args.batch_size])
            start = time.perf_counter()
            for _ in range(args.steps):
                run(texts)
            secs = time.perf_counter() - start
        out.update(
            workload="infer-texts",
            texts=len(texts),
            seconds=secs,
            items_per_second=len(texts) * args.steps / secs,
        )
        return out
    batch = random_batch(config, args)
    with torch.inference_mode(), autocast(args):
        secs = timed(args, lambda: model(**batch).logits.tolist())
    return record_throughput(out, "infer", secs, args, config, passes=1)


def train(args):
    model, config = model_of(args.model)
    model.to(args.device).train()
    out = model_fields(args, config)
    batch = random_batch(config, args)
    labels = torch.randint(0, config.num_labels, (args.batch_size,), generator=torch.Generator().manual_seed(1))
    labels = labels.to(args.device)
    opt = hf_adamw(model, 5e-5, 0.01)

    def step():
        with autocast(args):
            loss = model(**batch, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0).item()
        opt.step()
        opt.zero_grad(set_to_none=True)

    # Backward is twice the forward's FLOPs.
    return record_throughput(out, "train", timed(args, step), args, config, passes=3)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="workload", required=True)
    m = sub.add_parser("matmul")
    m.add_argument("--size", type=int, default=1024)
    m.add_argument("--steps", type=int, default=10)
    t = sub.add_parser("tokenize")
    t.add_argument("--vocab", required=True)
    t.add_argument("--texts", required=True)
    t.add_argument("--limit", type=int, default=20_000)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--steps", type=int, default=3)
    m.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    for name in ("infer", "train"):
        w = sub.add_parser(name)
        w.add_argument("--model", required=True)
        w.add_argument("--batch-size", type=int, default=32)
        w.add_argument("--seq-len", type=int, default=128)
        w.add_argument("--steps", type=int, default=5)
        w.add_argument("--warmup", type=int, default=1)
        w.add_argument("--texts")
        w.add_argument("--limit", type=int, default=2_000)
        w.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
        w.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "f16"])
        if name == "infer":
            w.add_argument("--quantize", choices=["int8"])
    args = p.parse_args()
    torch.manual_seed(0)
    result = {"matmul": matmul, "tokenize": tokenize, "infer": infer, "train": train}[args.workload](args)
    result.update(
        implementation="pytorch",
        backend=f"torch-{getattr(args, 'device', 'cpu')}",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        peak_rss_mb=peak_rss_mb(),
    )
    if getattr(args, "device", "cpu") == "cuda":
        result.update(gpu=torch.cuda.get_device_name(), peak_gpu_mb=torch.cuda.max_memory_reserved() / 2**20)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
