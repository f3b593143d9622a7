#!/usr/bin/env bash
# Run a benchmark grid on an offline GPU machine until DEADLINE (epoch seconds) and
# leave the rows and manifest in $OUT. The grid resumes: carry the CSV back in and run it again.
#     DEADLINE=$(($(date +%s) + 400)) CHECKPOINT=phantom_cpu bash tools/device_benchmark.sh
# CHECKPOINT must hold the weights the table was measured with (its manifest's weights_sha256);
# results/benchmark_cpu.csv is measured with the weights the zoo ships as phantom_cpu.
#     bash tools/device_benchmark.sh export     # only export the grid's phantom targets (run it early, in the background)
set -uo pipefail
source tools/device_env.sh
GRID=${GRID:-grids/fseft_phantom_cpu.toml}; CSV=${CSV:-results/benchmark_cpu.csv}
WORKERS=${WORKERS:-8}; CHECKPOINT=${CHECKPOINT:-phantom_cpu}; DEADLINE=${DEADLINE:-$(($(date +%s) + 400))}
if [ "${1:-}" = export ]; then
  python3 -c "from fseft_lab.benchmark import block_dataset, read_grid; from fseft_lab.profiles import get_profile
for b in read_grid('$GRID'): print(block_dataset(b, 'data/benchmark', get_profile('cpu')).root)"
  exit
fi
mkdir -p "$(dirname "$CSV")"
for f in "$CSV" "${CSV%.csv}.json"; do  # resume from the committed rows; the manifest gains this invocation
  [ -f "$OUT/$(basename "$f")" ] || { [ -f "$f" ] && cp "$f" "$OUT/"; }
done
timeout -s INT $((DEADLINE - $(date +%s))) python3 -m fseft_lab.cli benchmark --grid "$GRID" --out "$OUT/$(basename "$CSV")" \
  --profile cpu --checkpoint "$CHECKPOINT" --workers "$WORKERS" --data data/benchmark > "$OUT/benchmark.txt" 2>&1
echo "benchmark exit $?; rows: $(($(wc -l < "$OUT/$(basename "$CSV")") - 1))"
tail -c 3000 "$OUT/benchmark.txt"
