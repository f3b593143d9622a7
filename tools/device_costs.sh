#!/usr/bin/env bash
# Method costs on an offline GPU machine: the paper configuration (feature 48,
# 96^3, 6 crops per step) for every method, then the trunk-training methods again with activation
# checkpointing, then the gpu profile. Figures go to $OUT as they come, so a run cut short keeps
# what it measured.
#     bash tools/device_costs.sh
set -euo pipefail
source tools/device_env.sh
trunk="bitfit affine_ln lora adaptive_lora adaptformer compacter full_ft scratch"
python3 benchmarks/method_costs.py --profile paper --epochs 3 2>&1 | tee "$OUT/method_costs_paper.txt"
python3 benchmarks/method_costs.py --profile paper --epochs 3 --checkpointing --methods $trunk 2>&1 | tee "$OUT/method_costs_paper_checkpointing.txt"
[ "${SKIP_GPU_PROFILE:-}" ] || python3 benchmarks/method_costs.py --profile gpu --epochs 3 2>&1 | tee "$OUT/method_costs_gpu.txt"
