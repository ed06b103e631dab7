#!/usr/bin/env bash
# Builds what run.sh needs for a GPU lent for a few minutes: `zhbert` and the
# test binaries `backends` and `train-parity` with the CUDA backend and burn's
# autotuning compiled out, stripped and compressed (xz) into BIN_DIR.
#
#   benchmarks/gpu/build.sh BIN_DIR
#
# Why autotuning is off: burn-cuda 0.21 tunes every new matmul and reduction
# shape by compiling candidate kernels with NVRTC and timing them, 0.1 to 27 s
# a shape on an H200; the first try of the GPU checks
# (benchmarks/results/2026-11-26-h200-cuda.json) spent its whole lease doing
# that. burn has no run-time switch for it (CUBECL_AUTOTUNE_LEVEL only coarsens
# the shape buckets), and burn's `default` feature turns on burn-cuda's, which
# holds `autotune`. So this build patches burn-cuda 0.21.0 with a copy whose
# default features leave `autotune` out: every matmul then takes cubek's
# `Strategy::Auto` (a tensor-core kernel, falling back to a plain one), and
# every reduction its default strategy. The model code and every other crate
# are those of a normal `--features cuda` build.
#
# No CUDA is needed to build: burn 0.21 loads the driver and NVRTC at run time.
# Cargo.lock is restored afterwards (the patch changes burn-cuda's source).
set -euo pipefail
OUT=$(realpath -m "$1")
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
mkdir -p "$OUT"
pack() { # pack NAME EXECUTABLE: a stripped, xz-compressed copy in OUT
    strip -o "$OUT/$1" "$2"
    xz -T0 -9 -f "$OUT/$1"
}
registry_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/burn-cuda-0.21.0 | head -1)
patched=target/gpu-patch/burn-cuda
rm -rf "$patched"
mkdir -p "$(dirname "$patched")"
cp -r "$registry_src" "$patched"
python3 - "$patched/Cargo.toml" <<'EOF'
import re, sys
path = sys.argv[1]
text = open(path).read()
no_autotune = ('default = [\n    "std",\n    "fusion",\n    "burn-cubecl/std",\n'
               '    "burn-cubecl/fusion",\n    "cubecl/default",\n]')
text, n = re.subn(r'^default = \[.*?\]', no_autotune, text, count=1, flags=re.S | re.M)
assert n == 1, "no default feature list in burn-cuda's Cargo.toml"
open(path, "w").write(text)
EOF
cp Cargo.lock target/gpu-patch/Cargo.lock.orig
trap 'cp target/gpu-patch/Cargo.lock.orig Cargo.lock' EXIT
patch_arg="patch.crates-io.burn-cuda.path=\"$patched\""
cargo build --release -p zhbert-cli --features cuda --config "$patch_arg"
pack zhbert target/release/zhbert
messages=$(mktemp)
cargo test --release -p zhbert-model -p zhbert-train --features cuda --no-run \
    --message-format json --config "$patch_arg" >"$messages"
test_binary() { # the executable of test target $2 of package $1
    python3 - "$messages" "$1" "$2" <<'EOF'
import json, sys
messages, package, target = sys.argv[1:]
for line in open(messages):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] \
            and m["target"]["name"] == target and m["package_id"].endswith(f"#{package}@0.1.0"):
        print(m["executable"])
EOF
}
pack backends "$(test_binary zhbert-model backends)"
pack train-parity "$(test_binary zhbert-train parity)"
rm -f "$messages"
ls -l "$OUT"
