#!/usr/bin/env bash
# The main job, end to end on real assets: SmolLM2 predictions and a rule-vector demo, EDM's Inception
# features of real CIFAR images (about 5–10 minutes on 2 CPU cores once built).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/demo}
mkdir -p "$OUT"
run() { cargo run --release -q -p "$1" -- "${@:2}"; }

echo "== 1. fetch and verify the real assets"
run assets-cli fetch
run assets-cli verify
GGUF=$(run assets-cli path smollm2-135m-gguf)

echo "== 2. SmolLM2-135M next-token predictions for two ICL prompts"
printf '%s\n' '{"prompt": "hot -> cold\nbig -> small\nfast ->"}' '{"prompt": "France -> Paris\nJapan -> Tokyo\nItaly ->"}' > "$OUT/prompts.jsonl"
run icl-probe-cli predict --model "$GGUF" --prompts "$OUT/prompts.jsonl" --output "$OUT/predictions.jsonl"
cat "$OUT/predictions.jsonl" | cut -c1-300

echo "== 3. rule vectors vs ICL on SmolLM2 (one task, every 6th layer): report in $OUT/icl/report.md"
run icl-probe-cli demo --model "$GGUF" --out "$OUT/icl"

echo "== 4. EDM's Inception pool3 features of the 40 real CIFAR images"
run fid-cli features --images "$(run assets-cli path foolbox-cifar)" --output "$OUT/cifar_pool3.safetensors"
