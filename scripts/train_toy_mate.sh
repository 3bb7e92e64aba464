#!/usr/bin/env bash
# LinGen's MATE against self-attention in the toy world, on one budget: both transformers are trained from scratch on
# the data and settings of scripts/train_toy.sh's stages 1 and 2 (stage 2 shortened to $STAGE2_STEPS steps for both,
# since a MATE step costs ~5x a full-attention one at the toy's 16-48 tokens), the MATE one with
# configs/train/toy_mate.yaml, then both are measured by tools/eval_toy.py on the held-out combinations
# (docs/linear_attention.md). Uses scripts/train_toy.sh's data and caches in $RUN (made if missing); each model is
# exported to $RUN/compare_<full|mate>/dit and its evaluation written beside it. Resumable like the other toy scripts.
# MIXERS="mate" trains and measures only the MATE model (e.g. STAGE2_STEPS=2500, the full-attention model's own
# budget in scripts/train_toy.sh, whose checkpoint is the full-attention side). Extra arguments go to the MATE
# model's train.py in both stages (a variant: `TAG=steps MIXERS=mate bash scripts/train_toy_mate.sh
# --model.mate_step_range "[0.02, 0.06]"`); TAG names the variant's folder, $RUN/compare_mate_<TAG>.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toy_common.sh
EXPORT=${EXPORT:-checkpoints/toy}
TAE="$EXPORT/tae.safetensors"
STAGE2_STEPS=${STAGE2_STEPS:-800}
MIXERS=${MIXERS:-full mate}

make_data
cache "$TAE" "$EXPORT"
for mixer in $MIXERS; do
  options=()
  out="$RUN/compare_$mixer"
  [ "$mixer" = mate ] && options=(--config configs/train/toy_mate.yaml "$@") && out="$out${TAG:+_$TAG}"
  train_stage configs/train/toy_stage1_t2i.yaml "$out/stage1" "$TAE" "${options[@]}"
  train_stage configs/train/toy_stage2_t2iv.yaml "$out/stage2" "$TAE" "${options[@]}" --train.steps "$STAGE2_STEPS" \
    --valid.csv_path "$RUN/data/heldout.csv" \
    --model.pretrained_model_path "$(ls "$out"/stage1/ckpt/step_*.safetensors | tail -n 1)"
  python tools/export_dit.py --checkpoint "$out/stage2/ckpt" --output "$out/dit" --overwrite true
  python tools/eval_toy.py generate --config configs/inference/toy.yaml --csv "$RUN/data/heldout.csv" \
    --seen_csv "$RUN/data/train.csv" --seen_combos 8 --output_path "$out/eval" \
    --model.dit_checkpoint "$out/dit.safetensors"
done
