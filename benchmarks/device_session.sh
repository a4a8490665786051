#!/usr/bin/env bash
# The accelerator checks the open issues owe, prepared for a session that is lent a device, as two
# calls of the device tool (a call may run 10 minutes; a session has about 15):
#
#   OUT=$OUT bash benchmarks/device_session.sh train   # ≈ 9.5 min: timeout_s=590
#   OUT=$OUT bash benchmarks/device_session.sh speed   # ≈ 3 min, if the budget is left
#
# train (issue #14): configs/synthface.py:small64 with a 20,000-step deformation warm-up and the
#   image's gradient off the deformation network, in two arms side by side on the one device
#   (each with 45 % of its memory): `id`, a field that also carries the identity (width 128), and
#   `exp`, the paper's expression-only field; TRAIN_SECONDS (default 200) of training each, the
#   metrics that need no real images (control, ds, consistency, geometry) and a model folder at 3
#   checkpoints (benchmarks/train_device.py; <OUT>/<arm>/record.json, log.jsonl, model_*.tar).
#   Back on the CPU: evaluate --metrics=geometry,control, benchmarks/control_parts.py and
#   benchmarks/expression_gain.py --code=id on the best folder; FID with the dataset.
# speed (issues #17, #18 follow-ups): model.precision on the shipped model (speed and the image /
#   depth difference from float32), the render with and without radiance skipping at 64² and 128²,
#   and the viewer's frame rate.
# TRAIN_ARGS adds flags to both arms (a CPU smoke run: --config.num_steps=4 --num_images=16 ...).
set -u
PART="${1:?usage: OUT=DIR bash benchmarks/device_session.sh train|speed}"
OUT="${OUT:?set OUT to the output folder}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null > "${OUT}/device.txt" || true

case "${PART}" in
  train)
    T=(timeout "${TRAIN_TIMEOUT:-560}" python3 benchmarks/train_device.py
       --config=configs/synthface.py:small64 --config.imitation.deform_warmup_steps=20000
       --config.imitation.deform_image_gradient=False --seconds="${TRAIN_SECONDS:-200}"
       --num_checkpoints=3 ${TRAIN_ARGS:-})
    mkdir -p "${OUT}/id" "${OUT}/exp"
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 "${T[@]}" --out="${OUT}/id" \
      --config.imitation.deform_identity=True --config.model.deform_hidden=128 \
      > "${OUT}/id/stdout.txt" 2>&1 &
    XLA_PYTHON_CLIENT_MEM_FRACTION=0.45 "${T[@]}" --out="${OUT}/exp" \
      > "${OUT}/exp/stdout.txt" 2>&1 &
    wait
    tail -n 3 "${OUT}/id/stdout.txt" "${OUT}/exp/stdout.txt"
    ;;
  speed)
    cd benchmarks
    timeout 150 python3 precision.py --pretrained=synthfaces --num=16 \
      --out="${OUT}/precision_device.json" > "${OUT}/precision.txt" 2>&1
    for skip in off on; do
      timeout 150 python3 render.py --resolutions=64,128 --batch=8 --skip_invalid="${skip}" \
        --out="${OUT}/render_skip_${skip}_device.json" > "${OUT}/render_${skip}.txt" 2>&1
    done
    timeout 90 python3 viewer.py --resolutions=64,128 --out="${OUT}/viewer_device.json" \
      > "${OUT}/viewer.txt" 2>&1
    tail -n 12 "${OUT}"/*.txt
    ;;
  *)
    echo "unknown part ${PART}: use train or speed" >&2
    exit 2
    ;;
esac
