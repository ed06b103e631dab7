#!/usr/bin/env python3
"""A sweep of from-scratch recipes for `tiny-zh` on one GPU, many seeds each.

`scratch_recipes.py` runs one recipe on a CPU in minutes; on the 2-core CPU
there was time for one or two seeds a recipe, and the spread between seeds
(about a point of test accuracy) hid whatever the recipes changed. Here every
recipe runs with several seeds, in parallel processes on one GPU, and is judged
by its mean dev accuracy first (the split the preset may select on) and its
mean test accuracy second.

Everything but the knobs in `BASE` is `scratch_recipes.py --recipe R1
--wordpiece V --distill W`: HF's WordPiece trainer on the training texts, HF
`BertForSequenceClassification` from HF's random init, `hf_adamw`, linear
warmup then decay, global-norm clipping at 1, length-grouped batches, dev and
test accuracy after every epoch, the epoch of the best dev accuracy kept.

The teacher's out-of-fold probabilities come from files that
`scratch_sweep.py teacher` writes on the CPU beforehand (scikit-learn is not
needed on the GPU machine): the baseline's char 1-3-gram TF-IDF + logistic
regression at C = 10 (`tfidf`), or the same with NB-weighted features (`nb`),
5 stratified folds by seed 42.

    python3 benchmarks/gpu/scratch_sweep.py teacher --out T
    python3 benchmarks/gpu/scratch_sweep.py sweep --teachers T --out R --workers 12 [--plan main]
    python3 benchmarks/gpu/scratch_sweep.py summary R/runs.jsonl

Plans (`--plan`): `main`, 22 recipes (the preset, then one change at a time,
then cheap combinations); `confirm`, more seeds of the best of `main` by dev
accuracy; `distill` and `length`, two small ones for the CPU (`--device cpu
--workers 2`); `smoke`, a one-minute check of the script.

`cost` in the summary is a recipe's training FLOPs relative to the preset's
(`flops` in each record): what the recipe would cost zhbert on the CPU,
where the preset trains in about 8 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from sentiment_split import REPO, hf_adamw, read_split  # noqa: E402

BASE = dict(hidden=256, layers=4, vocab=16000, max_length=128, lr=3e-4, epochs=3, batch=32,
            distill=0.5, teacher="tfidf", temperature=1.0, dropout=0.1, warmup=0.1,
            weight_decay=0.01, rdrop=0.0)


def from_changes(changes: list[dict]) -> list[dict]:
    """Recipes: the preset (`BASE`) with each change applied, the change kept
    under `change` to name the recipe in the summary."""
    return [dict(BASE, **c, change=c) for c in changes]


def plan_main() -> list[dict]:
    """Recipes, most wanted first: the preset, then one change at a time, then
    the changes that combine cheaply."""
    return from_changes([
        {},
        {"distill": 0.8}, {"distill": 1.0},
        {"teacher": "nb", "distill": 0.5}, {"teacher": "nb", "distill": 0.8},
        {"epochs": 5}, {"epochs": 5, "distill": 1.0},
        {"temperature": 2.0, "distill": 0.8},
        {"lr": 1.5e-4}, {"lr": 5e-4, "distill": 0.8},
        {"batch": 16}, {"batch": 64, "lr": 5e-4},
        {"vocab": 8000}, {"vocab": 32000},
        {"hidden": 384, "layers": 4}, {"hidden": 256, "layers": 6}, {"hidden": 128, "layers": 4, "epochs": 6},
        {"layers": 2, "epochs": 5},
        {"dropout": 0.2, "epochs": 5},
        {"rdrop": 1.0, "teacher": "nb", "distill": 0.8},
        {"teacher": "nb", "distill": 1.0, "epochs": 5},
        {"hidden": 384, "layers": 4, "teacher": "nb", "distill": 0.8},
    ])


def plan_confirm() -> list[dict]:
    """After `main`: more seeds of the recipes with the best mean dev accuracy
    there, and their combinations (run with --first-seed 5)."""
    return from_changes([
        {"epochs": 5}, {"hidden": 128, "layers": 4, "epochs": 6}, {"hidden": 128, "layers": 4, "epochs": 10},
        {"epochs": 5, "dropout": 0.2, "teacher": "nb", "distill": 0.8},
        {"epochs": 5, "vocab": 20000},
    ])


def plan_distill() -> list[dict]:
    """The distillation weight below the preset's 0.5 (the GPU runs of `main`
    only went above it); cheap enough for the CPU (`--device cpu`)."""
    return from_changes([{"distill": 0.3}, {"distill": 0.0}])


def plan_length() -> list[dict]:
    """Max length 256: 5.4% of training and 7.3% of dev reviews are longer than
    128 tokens, and the teacher reads them whole (CPU)."""
    return from_changes([{"max_length": 256}])


def plan_smoke() -> list[dict]:
    """Two tiny recipes, one epoch: checks the script end to end on a CPU."""
    small = dict(BASE, hidden=64, layers=1, vocab=2000, epochs=1, batch=128)
    other = {"teacher": "nb", "temperature": 2.0, "rdrop": 1.0}
    return [dict(small, change={}), dict(small, **other, change=other)]


PLANS = {"main": plan_main, "confirm": plan_confirm, "distill": plan_distill, "length": plan_length, "smoke": plan_smoke}


# ---------------------------------------------------------------- teacher (CPU)

def write_teachers(out: Path, data: Path) -> None:
    import numpy as np
    import scratch_recipes as sr
    texts, labels = read_split(data / "train.tsv")
    out.mkdir(parents=True, exist_ok=True)
    for name, nb in (("tfidf", False), ("nb", True)):
        start = time.perf_counter()
        probs, _ = sr.teacher_probabilities(texts, labels, 42, None, nb)
        np.save(out / f"{name}.npy", probs.numpy())
        print(json.dumps({"teacher": name, "seconds": round(time.perf_counter() - start, 1)}), flush=True)


# ---------------------------------------------------------------- one run (GPU)

STATE: dict = {}


def init_worker(data: str, teachers: str, device: str) -> None:
    import numpy as np
    import torch
    torch.set_num_threads(1)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    STATE["device"] = device
    STATE["splits"] = {s: read_split(Path(data) / f"{s}.tsv") for s in ("train", "dev", "test")}
    STATE["teachers"] = {n: torch.from_numpy(np.load(Path(teachers) / f"{n}.npy")) for n in ("tfidf", "nb")}
    STATE["tokenized"] = {}


def tokenized(vocab: int, max_length: int):
    import scratch_recipes as sr
    key = (vocab, max_length)
    if key not in STATE["tokenized"]:
        train_texts = STATE["splits"]["train"][0]
        tok = sr.wordpiece(train_texts, vocab)
        STATE["tokenized"][key] = (len(tok.get_vocab()),
                                   {s: sr.encode_wp(tok, STATE["splits"][s][0], max_length) for s in ("train", "dev", "test")})
    return STATE["tokenized"][key]


def run(job: dict) -> dict:
    import scratch_recipes as sr
    import torch
    from transformers import BertConfig, BertForSequenceClassification, get_linear_schedule_with_warmup
    device = STATE["device"]
    r, seed = job["recipe"], job["seed"]
    vocab_size, ids = tokenized(r["vocab"], r["max_length"])
    (_, train_labels), (_, dev_labels), (_, test_labels) = (STATE["splits"][s] for s in ("train", "dev", "test"))
    start = time.perf_counter()
    torch.manual_seed(seed)
    rng = random.Random(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=r["hidden"], num_hidden_layers=r["layers"],
                        num_attention_heads=r["hidden"] // 64, intermediate_size=4 * r["hidden"],
                        hidden_dropout_prob=r["dropout"], attention_probs_dropout_prob=r["dropout"],
                        max_position_embeddings=r["max_length"], pad_token_id=sr.PAD, num_labels=2)
    model = BertForSequenceClassification(config).to(device)
    teacher = STATE["teachers"][r["teacher"]]
    if r["temperature"] != 1.0:
        teacher = torch.softmax(torch.log(teacher.clamp_min(1e-12)) / r["temperature"], -1)
    teacher = teacher.to(device)
    opt = hf_adamw(model, r["lr"], r["weight_decay"])
    lengths = [len(x) for x in ids["train"]]
    steps_per_epoch = math.ceil(len(lengths) / r["batch"])
    total = r["epochs"] * steps_per_epoch
    sched = get_linear_schedule_with_warmup(opt, math.ceil(r["warmup"] * total), total)
    tokens = 0
    epochs = []
    best = None
    for epoch in range(1, r["epochs"] + 1):
        for idx in sr.batches(lengths, r["batch"], True, rng):
            input_ids, attention = sr.pad([ids["train"][j] for j in idx])
            tokens += input_ids.numel()
            input_ids, attention = input_ids.to(device), attention.to(device)
            labels = torch.tensor([train_labels[j] for j in idx], device=device)
            target = teacher[torch.tensor(idx, device=device)]
            if r["rdrop"] > 0:
                input_ids, attention = torch.cat([input_ids, input_ids]), torch.cat([attention, attention])
                labels, target = torch.cat([labels, labels]), torch.cat([target, target])
            logits = model(input_ids=input_ids, attention_mask=attention).logits
            logp = torch.log_softmax(logits, -1)
            loss = torch.nn.functional.nll_loss(logp, labels)
            if r["distill"] > 0:
                loss = (1 - r["distill"]) * loss + r["distill"] * -(target * logp).sum(-1).mean()
            if r["rdrop"] > 0:
                a, b = logp.chunk(2)
                loss = loss + r["rdrop"] * 0.5 * ((a.exp() * (a - b)).sum(-1) + (b.exp() * (b - a)).sum(-1)).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
        rec = {"epoch": epoch, "dev": sr.accuracy(model, ids["dev"], dev_labels, device, 256),
               "test": sr.accuracy(model, ids["test"], test_labels, device, 256)}
        epochs.append(rec)
        if best is None or rec["dev"] > best["dev"]:
            best = rec
    # training FLOPs ~ 6 x the encoder's matmul parameters (12 h^2 a layer; the
    # 2h term is negligible, kept as the runs of 2026-11-27 computed it) x the
    # padded batch tokens; the embedding rows are a lookup, not a matmul
    h, layers = r["hidden"], r["layers"]
    flops = 6 * (layers * 12 * h * h + h * 2) * tokens * (2 if r["rdrop"] > 0 else 1)
    return {"recipe": r, "seed": seed, "best": best, "epochs": epochs, "flops": flops,
            "seconds": round(time.perf_counter() - start, 1), "pid": os.getpid()}


def sweep(args) -> None:
    import multiprocessing as mp
    recipes = PLANS[args.plan]()
    jobs = [{"recipe": r, "seed": s} for s in range(args.first_seed, args.first_seed + args.seeds) for r in recipes]  # every recipe's first seed first
    args.out.mkdir(parents=True, exist_ok=True)
    ctx = mp.get_context("spawn")
    deadline = time.monotonic() + args.seconds
    with ctx.Pool(args.workers, initializer=init_worker, initargs=(str(args.data), str(args.teachers), args.device)) as pool, \
            open(args.out / "runs.jsonl", "a") as out:
        for res in pool.imap_unordered(run, jobs):
            out.write(json.dumps(res) + "\n")
            out.flush()
            if time.monotonic() > deadline:
                break  # leaving the `with` terminates the workers


def summary(paths: list[Path]) -> None:
    """Mean best-dev-epoch accuracies by recipe over every file's runs, best
    mean dev accuracy first; `cost` is relative to the preset's runs (`{}`)."""
    import statistics as st
    groups: dict[str, list] = {}
    for path in paths:
        for line in open(path):
            rec = json.loads(line)
            groups.setdefault(json.dumps(rec["recipe"]["change"], sort_keys=True), []).append(rec)
    base = groups.get("{}")
    base_flops = st.mean(r["flops"] for r in base) if base else float("nan")
    rows = []
    for key, recs in groups.items():
        dev = st.mean(r["best"]["dev"] for r in recs)
        test = [r["best"]["test"] for r in recs]
        rows.append((dev, key, len(recs), st.mean(test), st.stdev(test) if len(test) > 1 else 0.0,
                     (dev + st.mean(test)) / 2, st.mean(r["flops"] for r in recs) / base_flops))
    print(f"{'change':62} {'n':>2} {'dev':>7} {'test':>7} {'sd':>6} {'both':>7} {'cost':>5}")
    for dev, key, n, test, sd, both, cost in sorted(rows, reverse=True):
        print(f"{key:62} {n:2d} {dev:7.4f} {test:7.4f} {sd:6.4f} {both:7.4f} {cost:5.2f}")
    every = [r for recs in groups.values() for r in recs]
    print(f"all {len(every)} runs: dev {st.mean(r['best']['dev'] for r in every):.4f}, "
          f"test {st.mean(r['best']['test'] for r in every):.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("teacher")
    t.add_argument("--out", type=Path, required=True)
    t.add_argument("--data", type=Path, default=REPO / "datasets" / "sentiment")
    s = sub.add_parser("sweep")
    s.add_argument("--out", type=Path, required=True)
    s.add_argument("--teachers", type=Path, required=True)
    s.add_argument("--data", type=Path, default=REPO / "datasets" / "sentiment")
    s.add_argument("--plan", choices=sorted(PLANS), default="main")
    s.add_argument("--seeds", type=int, default=6, help="this many seeds of every recipe")
    s.add_argument("--first-seed", type=int, default=1)
    s.add_argument("--workers", type=int, default=12)
    s.add_argument("--device", default="cuda")
    s.add_argument("--seconds", type=float, default=1e9, help="stop taking results after this long")
    m = sub.add_parser("summary")
    m.add_argument("runs", type=Path, nargs="+")
    args = p.parse_args()
    if args.cmd == "teacher":
        write_teachers(args.out, args.data)
    elif args.cmd == "sweep":
        sweep(args)
    else:
        summary(args.runs)


if __name__ == "__main__":
    main()
