#!/usr/bin/env bash
# GPU check in one run: parity of every network on CUDA against the golden fixtures, then the performance
# table (docs/performance.md), printed as one Markdown table.
#
#   scripts/gpu-check.sh build   # here, on a CPU machine with Rust: builds the CUDA binary into .devbuild/
#   scripts/gpu-check.sh run     # on the GPU machine (no Rust needed), from the repository root
#
# `.devbuild/` is git-ignored; carry it to the GPU machine (device `run` with carry: [".devbuild"]). The
# golden fixtures travel with the working tree. cubecl's JIT and autotune caches are kept in
# .devbuild/cubecl-cache and copied to $OUT/cubecl-cache.tar.gz when $OUT is set, so the next session can put
# them back in .devbuild/ and skip minutes of kernel compilation.
#
# Assets: `build` also copies the EfficientNet-Lite0 weights (18.8 MB) into .devbuild/assets and splits
# the 87 MB Inception file into 40 MB parts under .devbuild/inception/ (a call carries at most 64 MiB, and
# the stripped binary alone is ~46 MB). Carry them over three calls on one warm machine (ignored files
# already there are kept between calls):
#   call 1: carry [".devbuild/inception/part-00", ".devbuild/inception/part-02",
#                  ".devbuild/inception/default_1.pt.sha256"], command `true`
#   call 2: carry [".devbuild/inception/part-01", ".devbuild/assets"], command `true`
#   call 3: carry [".devbuild/bin"], command `scripts/gpu-check.sh run`
# `run` joins the parts and checks their SHA-256. Without them the Inception *benchmark* still runs (random
# weights: same kernels, same shapes) and only its pool3 *parity* check is skipped. The 98 MB SmolLM2 file
# is not used on the GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=.devbuild
BIN=$DEV/bin/icl-gdd-bench

build() {
  mkdir -p "$DEV/bin"
  # A separate target dir: the CUDA feature set would otherwise evict the CPU build's artifacts.
  CARGO_TARGET_DIR=${CUDA_TARGET_DIR:-target-cuda} cargo build --release -p bench-cli --features cuda
  cp "${CUDA_TARGET_DIR:-target-cuda}/release/icl-gdd-bench" "$BIN"
  strip "$BIN" || true
  ls -la "$BIN"
  mkdir -p "$DEV/assets" "$DEV/inception"
  local effnet inception
  effnet=$(cargo run --release -q -p assets-cli -- path efficientnet-lite0 2>/dev/null || true)
  inception=$(cargo run --release -q -p assets-cli -- path inception-2015-12-05 2>/dev/null || true)
  if [ -f "$effnet" ]; then cp "$effnet" "$DEV/assets/"; fi
  if [ -f "$inception" ]; then
    rm -f "$DEV/inception/part-"*
    split -b 40M -d -a 2 "$inception" "$DEV/inception/part-"
    sha256sum "$inception" | cut -d' ' -f1 > "$DEV/inception/default_1.pt.sha256"
  fi
  du -sh "$DEV"/* "$DEV"/inception/* 2>/dev/null || true
}

run() {
  [ -x "$BIN" ] || { echo "error: $BIN missing: run 'scripts/gpu-check.sh build' here and carry .devbuild"; exit 2; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  local cache=$DEV/cubecl-cache
  mkdir -p "$cache"
  if [ -f "$DEV/cubecl-cache.tar.gz" ]; then tar xzf "$DEV/cubecl-cache.tar.gz" -C "$cache"; fi
  # cubecl reads cubecl.toml from the working directory: point both caches into .devbuild.
  cat > cubecl.toml <<EOF
[autotune]
cache = { file = "$PWD/$cache/autotune" }
[compilation]
cache = { file = "$PWD/$cache/compilation" }
EOF
  local log=${OUT:-$DEV}/gpu-check.md
  {
    echo "## parity on CUDA"
    "$BIN" --device cuda parity --fixtures crates ${INCEPTION:+--inception "$INCEPTION"} \
      $( [ -f $DEV/assets/efficientnet-lite0-57934424.pth ] && echo --effnet $DEV/assets/efficientnet-lite0-57934424.pth ) || echo "PARITY FAILED"
    echo
    echo "## parity on CUDA in exact float32 (ICLGDD_EXACT_F32=1: split products undo TF32; CPU limits)"
    ICLGDD_EXACT_F32=1 "$BIN" --device cuda parity --fixtures crates ${INCEPTION:+--inception "$INCEPTION"} \
      $( [ -f $DEV/assets/efficientnet-lite0-57934424.pth ] && echo --effnet $DEV/assets/efficientnet-lite0-57934424.pth ) || echo "EXACT PARITY FAILED"
    echo
    echo "## half-precision smoke (bf16 GPT-2 forward runs on CUDA)"
    "$BIN" --device cuda gpt2 --batch 1 --tokens 8 --precision bf16 --runs 1 --warmup 0
    echo
    echo "## performance"
    "$BIN" --device cuda primitives --precision f32
    "$BIN" --device cuda primitives --precision bf16
    "$BIN" --device cuda edm --net ddpmpp --mode onestep --batch 1024 --precision f32
    "$BIN" --device cuda edm --net ddpmpp --mode onestep --batch 1024 --precision f16
    "$BIN" --device cuda edm --net ddpmpp --mode heun --steps 18 --batch 256 --precision f32 --runs 2
    "$BIN" --device cuda edm --net ddpmpp --mode heun --steps 18 --batch 256 --precision f16 --runs 2
    "$BIN" --device cuda edm --net ddpmpp --mode train --batch 256 --precision f32
    "$BIN" --device cuda edm --net adm --mode onestep --batch 256 --precision f16
    "$BIN" --device cuda inception --batch 500
    "$BIN" --device cuda gpt2 --batch 64 --tokens 128 --precision f32
    "$BIN" --device cuda gpt2 --batch 64 --tokens 128 --precision f32 --cache-residuals
    "$BIN" --device cuda gpt2 --batch 64 --tokens 128 --precision bf16
  } 2>&1 | tee "$log"
  rm -f cubecl.toml
  if [ -n "${OUT:-}" ]; then tar czf "$OUT/cubecl-cache.tar.gz" -C "$cache" .; fi
}

join_inception() {
  # Reassemble default_1.pt from the carried parts, if all arrived intact.
  local dir=$DEV/inception
  if [ -f "$dir/default_1.pt" ]; then echo "$dir/default_1.pt"; return; fi
  ls "$dir"/part-* >/dev/null 2>&1 || return 0
  cat "$dir"/part-* > "$dir/default_1.pt.tmp"
  if [ "$(sha256sum "$dir/default_1.pt.tmp" | cut -d' ' -f1)" = "$(cat "$dir/default_1.pt.sha256" 2>/dev/null)" ]; then
    mv "$dir/default_1.pt.tmp" "$dir/default_1.pt"
    echo "$dir/default_1.pt"
  else
    echo "inception parts incomplete or corrupt: pool3 parity skipped" >&2
    rm -f "$dir/default_1.pt.tmp"
  fi
}

case "${1:-}" in
  build) build ;;
  run) INCEPTION=${INCEPTION:-$(join_inception)} run ;;
  *) echo "usage: $0 build|run"; exit 2 ;;
esac
