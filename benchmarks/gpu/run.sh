#!/usr/bin/env bash
# The GPU checks of issue 4 on one NVIDIA GPU, with binaries built on another
# machine (a GPU machine here has PyTorch but no Rust toolchain):
#
#   benchmarks/gpu/run.sh BIN_DIR OUT_DIR [STEP...]
#
# BIN_DIR holds `zhbert` and the test binaries `backends` and `train-parity`
# (the `backends` and `parity` test executables of zhbert-model and
# zhbert-train), as benchmarks/gpu/build.sh makes them: CUDA, autotuning
# compiled out. The test binaries find tests/fixtures through the path of the
# checkout they were built in, so link that path to this checkout there. The
# MiniLM folder is $ZHBERT_MINILM_DIR, the sentiment split datasets/sentiment/
# (`zhbert datasets fetch`). Each step writes its log and JSON lines under
# OUT_DIR; with no STEP, all of them run in this order (most wanted first, for a
# short lease):
#
#   info      nvidia-smi, `zhbert info`, torch's view of the GPU
#   parity-model  the ignored CUDA test of zhbert-model: logits against
#             PyTorch's, within 3 times what TF32 matmul operands make PyTorch stray
#   bench-minilm, bench-bert-base
#             200 training steps (batch 32, length 128) of MiniLM or of the
#             bert-base-chinese shape, fp32 and bf16, zhbert then PyTorch
#             (benchmarks/pytorch_bench.py): sequences/s and peak GPU memory
#   finetune  MiniLM on the sentiment corpus (2 epochs, lr 5e-5, batch 32,
#             length 128, seed 42), fp32 and bf16: test accuracy and speed
#   ddp       tiny-zh for 20 steps on one replica and on `--devices cuda:0,cuda:0`
#   parity-train  the ignored CUDA test of zhbert-train: 5 fp32 training steps
#             against PyTorch and Flex; 20 bf16 and f16 steps against torch.autocast
#   torch-finetune  the finetune step's runs in PyTorch (benchmarks/pytorch_finetune.py)
#   (`parity` runs parity-model and parity-train)
#
# With ZHBERT_GPU_DEADLINE=S, no run goes on past S seconds from the start (a
# lease of a GPU machine is short): each run's time limit is cut to what is
# left, and runs with less than 20 s left are skipped.
#
# Peak GPU memory is nvidia-smi's memory.used sampled every 100 ms, less what
# was in use before the process started: the CUDA context and both frameworks'
# caching allocators included, the same yardstick for both.
set -uo pipefail
BIN=$(realpath "$1")
OUT=$(realpath -m "$2")
shift 2
[ $# -gt 0 ] || set -- info parity-model bench-minilm finetune bench-bert-base ddp parity-train torch-finetune
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
mkdir -p "$OUT"
export RUST_LOG=${RUST_LOG:-info} TRANSFORMERS_VERBOSITY=error PYTHONUNBUFFERED=1
# A normal build of burn's CUDA backend tunes every new matmul and reduction
# shape (0.1 to 27 s each on an H200); build.sh compiles that out, and this
# keeps the tuning coarse where a tuned build is given.
export CUBECL_AUTOTUNE_LEVEL=${CUBECL_AUTOTUNE_LEVEL:-minimal}
echo "CUBECL_AUTOTUNE_LEVEL=$CUBECL_AUTOTUNE_LEVEL" | tee -a "$OUT/steps.log"
# Each process compiles its kernels with NVRTC (about a second each): keep the
# PTX under target/ so the runs after the first reuse it (cubecl reads
# cubecl.toml from the working directory up).
if [ ! -e cubecl.toml ]; then
    printf '[compilation]\ncache = "target"\n' >cubecl.toml
    trap 'rm -f "$REPO/cubecl.toml"' EXIT
fi
# burn's CUDA runtime compiles its kernels with NVRTC, loaded at run time.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
    "$(python3 -c 'import nvidia, os; print(os.path.dirname(nvidia.__path__[0]))' 2>/dev/null)"/nvidia/cu13/lib; do
    [ -d "$d" ] && export LD_LIBRARY_PATH="$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
done

gpu_mem_used() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }

# measure NAME TIMEOUT CMD...: runs CMD with its output in OUT/NAME.log, and
# appends {"name", "rc", "seconds", "peak_gpu_mb_smi", "result"} to
# OUT/runs.jsonl, where result is the last JSON line CMD printed, if any.
measure() {
    local name=$1 limit=$2
    shift 2
    if [ -n "${ZHBERT_GPU_DEADLINE:-}" ]; then
        local left=$((ZHBERT_GPU_DEADLINE - SECONDS))
        if [ "$left" -lt 20 ]; then
            echo "== $name: skipped, ${left} s left before the deadline" | tee -a "$OUT/steps.log"
            return
        fi
        [ "$left" -lt "$limit" ] && limit=$left
    fi
    local base samples
    base=$(gpu_mem_used)
    samples=$(mktemp)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 >"$samples" &
    local sampler=$!
    local start=$SECONDS
    echo "== $name: $*" | tee -a "$OUT/steps.log"
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$? secs=$((SECONDS - start))
    kill "$sampler" 2>/dev/null
    wait "$sampler" 2>/dev/null
    local peak
    peak=$(sort -n "$samples" | tail -1)
    rm -f "$samples"
    local result
    result=$(grep '^{' "$OUT/$name.log" | tail -1)
    python3 - "$name" "$rc" "$secs" "$base" "$peak" "$result" "$*" >>"$OUT/runs.jsonl" <<'EOF'
import json, sys
name, rc, secs, base, peak, result, cmd = sys.argv[1:]
print(json.dumps({"name": name, "rc": int(rc), "seconds": int(secs), "command": cmd,
                  "peak_gpu_mb_smi": int(peak or 0) - int(base or 0),
                  "result": json.loads(result) if result else None}))
EOF
    echo "   rc $rc, ${secs} s, peak GPU memory $(( ${peak:-0} - ${base:-0} )) MiB" | tee -a "$OUT/steps.log"
    tail -3 "$OUT/$name.log"
}

minilm=${ZHBERT_MINILM_DIR:-target/assets/minilm}
data=datasets/sentiment
steps=()
for step in "$@"; do
    if [ "$step" = parity ]; then steps+=(parity-model parity-train); else steps+=("$step"); fi
done
for step in "${steps[@]}"; do
    case $step in
    info)
        nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
        head -15 "$OUT/nvidia-smi.txt"
        timeout 60 "$BIN/zhbert" info 2>&1 | tee "$OUT/zhbert-info.txt"
        python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__, torch.cuda.get_device_name())' 2>&1 | tee -a "$OUT/zhbert-info.txt"
        ;;
    parity-model)
        measure parity-model 150 "$BIN/backends" --ignored cuda --nocapture --test-threads 1
        ;;
    parity-train)
        measure parity-train 200 "$BIN/train-parity" --ignored cuda --nocapture --test-threads 1
        ;;
    bench-minilm | bench-bert-base)
        tag=${step#bench-}
        model=$([ "$tag" = bert-base ] && echo bert-base-chinese-shape || echo "$minilm")
        for p in fp32 bf16; do
            args=(train --model "$model" --steps 200 --warmup 5 --batch-size 32 --seq-len 128 --precision "$p")
            measure "bench-$tag-$p-zhbert" 100 "$BIN/zhbert" bench "${args[@]}" --backend cuda
            measure "bench-$tag-$p-pytorch" 60 python3 benchmarks/pytorch_bench.py "${args[@]}" --device cuda
        done
        ;;
    finetune)
        for p in fp32 bf16; do
            measure "finetune-$p-zhbert" 200 "$BIN/zhbert" train --train $data/train.tsv --dev $data/dev.tsv \
                --test $data/test.tsv --model "$minilm" --output "runs/gpu-finetune-$p" --epochs 2 --lr 5e-5 \
                --batch-size 32 --max-length 128 --warmup 0.1 --weight-decay 0.01 --max-grad-norm 1.0 \
                --seed 42 --backend cuda --precision "$p" --pad-to-multiple-of 32
            cp "runs/gpu-finetune-$p/eval.json" "$OUT/finetune-$p-zhbert-eval.json" 2>/dev/null
            cp "runs/gpu-finetune-$p/metrics.jsonl" "$OUT/finetune-$p-zhbert-metrics.jsonl" 2>/dev/null
        done
        ;;
    torch-finetune)
        for p in fp32 bf16; do
            measure "finetune-$p-pytorch" 100 python3 benchmarks/pytorch_finetune.py --minilm-dir "$minilm" \
                --device cuda --precision "$p" --out "$OUT/finetune-$p-pytorch.json"
        done
        ;;
    ddp)
        common=(train --train $data/train.tsv --model tiny-zh --distill 0
            --pretrain-epochs 0 --max-steps 20 --batch-size 32 --seed 7 --backend cuda --log-every 1 --pad-to-multiple-of 32)
        measure ddp-one 60 "$BIN/zhbert" "${common[@]}" --output runs/gpu-ddp-one
        measure ddp-two 60 "$BIN/zhbert" "${common[@]}" --output runs/gpu-ddp-two --devices cuda:0,cuda:0
        cp runs/gpu-ddp-one/metrics.jsonl "$OUT/ddp-one-metrics.jsonl" 2>/dev/null
        cp runs/gpu-ddp-two/metrics.jsonl "$OUT/ddp-two-metrics.jsonl" 2>/dev/null
        ;;
    *)
        echo "unknown step $step (info parity parity-model parity-train bench-minilm bench-bert-base finetune ddp torch-finetune)" >&2
        exit 2
        ;;
    esac
done
# The tuning results (target/autotune, burn's on-disk cache), to reuse them on a
# machine with the same GPU and driver: copy the folder back under target/.
if [ -d target/autotune ]; then tar czf "$OUT/autotune-cache.tgz" -C target autotune; fi
