# Sourced by tools/device_*.sh on an offline GPU machine: $OUT for results, and the
# packages the image lacks. Nothing can be downloaded there: monai and nibabel travel as wheels in
# .whl/ (fetched beforehand for its Python); torch, numpy, pandas and the rest are the image's.
OUT=${OUT:-/tmp/device_out}; mkdir -p "$OUT"
if [ ! -d /tmp/site ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
fi
if [ -d /tmp/site ]; then export PYTHONPATH=/tmp/site; fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 TQDM_MININTERVAL=30
