#!/usr/bin/env bash
# The CPU rows of docs/performance.md: the same harness as the GPU table, at sizes two cores finish in a few
# minutes. Prints one Markdown table. Run it on an idle machine (it measures wall time).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p bench-cli
BIN=target/release/icl-gdd-bench
R="--runs 5 --warmup 1"
echo "| workload | shape | precision | median time | throughput |"
echo "|---|---|---|---|---|"
{
  $BIN $R primitives --n 1024 --channels 64 --size 32 --batch 16
  $BIN $R edm --net tiny --mode onestep --batch 64
  $BIN --runs 3 --warmup 1 edm --net tiny --mode heun --steps 18 --batch 16
  $BIN $R edm --net tiny --mode train --batch 32
  ICLGDD_EXACT_F32=1 $BIN $R edm --net tiny --mode onestep --batch 64 | sed 's/| f32 |/| f32, exact mode |/'
  $BIN --runs 3 --warmup 1 edm --net ddpmpp --mode onestep --batch 8
  $BIN --runs 3 --warmup 1 inception --batch 8
  $BIN --runs 3 --warmup 1 gpt2 --batch 4 --tokens 128
  $BIN --runs 3 --warmup 1 gpt2 --batch 4 --tokens 128 --cache-residuals
  $BIN --runs 3 --warmup 1 gpt2 --batch 4 --tokens 128 --precision bf16
} | grep -v -e '^| workload' -e '^|---'
