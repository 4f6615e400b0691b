#!/usr/bin/env bash
# What a user installs is what runs (issue 11, section 3): a venv with `pip install -e '.[cpu]'` ONLY
# (no dev extra: no scikit-image, pytest or dlib) runs `mfrbench quality` and an MFGAN smoke training
# run (whose stage read-outs compute SSIM/PSNR), on synthetic faces in a temp folder, with no data kit.
#
#   ./.venv-cpu        created when missing, then `pip install -q -e '.[cpu]'` (pip: it takes local wheels)
#   align              synthetic faces (known landmarks, --landmarker none: no model files)
#   generate           mtf, drawn plain masks (no mask templates), exact mask maps
#   quality            SSIM/PSNR on those exact maps -> a quality row
#   train-aux seg/det  smoke runs: the frozen helpers MFGAN needs
#   train-gen          --method mfgan --profile smoke: every stage end runs the quality read-out
#
# Fails on the first error. Typical on 2 cores: install 1-5 min (seconds when .venv-cpu is there),
# the commands 2-4 min. Called by .ci/run; run it by hand with `bash scripts/ci_cpu_only.sh`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-cpu
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q -e '.[cpu]'
# The job proves nothing if a dev-only package slipped into this venv.
for dev_only in skimage pytest; do
    if "$VENV/bin/python" -c "import $dev_only" 2>/dev/null; then
        echo "ci_cpu_only: $dev_only is importable in $VENV, which must hold .[cpu] only" >&2
        exit 1
    fi
done

T=$(mktemp -d "${TMPDIR:-/tmp}/mfrbench-cpu-only.XXXXXX")
trap 'rm -rf "$T"' EXIT
export MFRBENCH_DATA="$T/no-data-kit" MFRBENCH_CACHE="$T/cache"   # nothing may come from a data kit
M="$VENV/bin/mfrbench"
set -x
"$M" align --dataset synthetic --root "$T/synth" --out "$T/aligned" --landmarker none --limit 24
"$M" generate --manifest "$T/aligned" --out "$T/masked" --mask-type plain --seed 0
"$M" quality --generated "$T/masked" --results "$T/results"
"$M" train-aux --module seg --data "$T/masked" --faces "$T/aligned" --out "$T/seg" --profile smoke --threads 1
"$M" train-aux --module det --data "$T/masked" --faces "$T/aligned" --out "$T/det" --profile smoke --threads 1
"$M" train-gen --method mfgan --profile smoke --seg "$T/seg" --det "$T/det" --faces "$T/aligned" \
    --masks "$T/masked" --out "$T/mfgan" --threads 1
set +x
test -s "$T/results/evals.csv"
echo "ci_cpu_only: .[cpu] alone ran quality and train-gen --method mfgan --profile smoke"
