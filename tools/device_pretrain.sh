#!/usr/bin/env bash
# Pre-train the shipped cpu-profile foundation model on an offline GPU machine within
# BUDGET seconds, then leave the weights, log and command in $OUT. Options after the script name go
# to `fseft-lab pretrain` (default: the recipe of the shipped model's latest runs, continued from
# its weights, with the GPU runs' batch of 4 crops and 24 cases per source; give each new run a seed
# its lineage has not used). With STEPS set, the probe that
# measures seconds per step is skipped (saves its start-up) and STEPS steps run, stopped at BUDGET.
#     BUDGET=470 bash tools/device_pretrain.sh [pretrain options]
#     STEPS=2400 BUDGET=330 SKIP_SPEED=1 bash tools/device_pretrain.sh [pretrain options]
set -euo pipefail
t0=$(date +%s)
source tools/device_env.sh
BUDGET=${BUDGET:-480}; RUN=${RUN:-runs/phantom_cpu_device}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no GPU"
  python3 -c "import platform, os, torch, monai, numpy; print('python', platform.python_version(), '| torch', torch.__version__, '| monai', monai.__version__, '| numpy', numpy.__version__, '|', os.cpu_count(), 'cpus')"
} | tee "$OUT/device.txt"
[ "${SKIP_SPEED:-}" ] || python3 benchmarks/pretrain_speed.py --profiles cpu gpu paper --steps 5 --crops 4 2>&1 | tee "$OUT/pretrain_speed.txt"
if [ $# -eq 0 ]; then  # the shipped model's current recipe (its manifest's command), on a GPU's batch
  set -- --profile cpu --cases 24 --crops 4 --lr 5e-4 --warmup 20 --balance structures --contrast-aug 0.5 \
         --phase-aug 0.5 --negatives 0.67 --seed 20 --init fseft_lab/models/weights/phantom_cpu.pt --workers 12 --checkpoint-every 100000
fi
left=$((BUDGET - $(date +%s) + t0))
if [ "${STEPS:-}" ]; then
  command=(fseft-lab pretrain "$RUN" --steps "$STEPS" "$@")
  timeout -s INT "$left" python3 -m fseft_lab.cli "${command[@]:1}" 2>&1 | tee "$OUT/pretrain.txt"
  printf '%q ' "${command[@]}" | sed 's/ $/\n/' > "$RUN/command.txt"
else
  python3 tools/pretrain_in_budget.py "$RUN" --budget "$left" -- "$@" 2>&1 | tee "$OUT/pretrain.txt"
fi
cp "$RUN"/model.pt "$RUN"/log.csv "$RUN"/run.json "$RUN"/command.txt "$OUT/"
echo "done in $(( $(date +%s) - t0 )) s"
