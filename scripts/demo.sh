#!/usr/bin/env bash
# The main job, end to end on real assets. Stages are added as the crates land.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
mkdir -p "$OUT"

echo "== 1. fetch and verify the real assets"
cargo run --release -q -p assets-cli -- fetch
cargo run --release -q -p assets-cli -- verify
