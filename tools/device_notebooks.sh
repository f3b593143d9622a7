#!/usr/bin/env bash
# Execute the course notebooks with the gpu profile on an offline GPU machine, one at
# a time so that one failure does not stop the rest, until DEADLINE (epoch seconds). The committed
# notebooks are not touched. Leaves in $OUT:
#   notebooks_gpu.csv      notebook, seconds, status (ok, failed, stopped at the deadline, not run)
#   notebooks_gpu.tar.gz   the executed copies and each notebook's log
#     DEADLINE=$(($(date +%s) + 540)) bash tools/device_notebooks.sh            # all, in course order
#     DEADLINE=$(($(date +%s) + 300)) bash tools/device_notebooks.sh 02 03      # some
# papermill, ipykernel and their needs travel as wheels in .whl/ (carry .whl; see device_env.sh).
set -uo pipefail
source tools/device_env.sh
DEADLINE=${DEADLINE:-$(($(date +%s) + 540))}
work=$(mktemp -d); mkdir -p "$work/executed" "$work/logs"
csv="$OUT/notebooks_gpu.csv"; echo "notebook,seconds,status" > "$csv"
if [ $# -gt 0 ]; then names=("$@"); else names=($(cd notebooks && ls [0-9][0-9]_*.ipynb)); fi
for name in "${names[@]}"; do
  name=${name%.ipynb}
  left=$((DEADLINE - $(date +%s)))
  if [ "$left" -le 15 ]; then echo "$name,,not run (deadline)" >> "$csv"; continue; fi
  start=$(date +%s)
  timeout -s TERM "$left" python3 -m fseft_lab.cli notebooks run --profile gpu --out "$work/executed" "$name" \
    > "$work/logs/$name.log" 2>&1
  rc=$?
  case $rc in 0) status=ok ;; 124) status="stopped at the deadline" ;; *) status="failed (exit $rc)" ;; esac
  echo "$name,$(($(date +%s) - start)),$status" >> "$csv"
  echo "$name: $status after $(($(date +%s) - start)) s"
  [ $rc -eq 0 ] || tail -n 15 "$work/logs/$name.log"
done
tar -czf "$OUT/notebooks_gpu.tar.gz" -C "$work" executed logs
cat "$csv"
