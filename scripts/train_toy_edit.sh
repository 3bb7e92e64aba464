#!/usr/bin/env bash
# The toy world's editing model (Movie Gen Edit's three stages, docs/editing.md) on a CPU, from the committed
# conditioned toy model: data and caches made with the committed TAE and text encoders, stage I (image edits with
# text-to-video batches), stage II (animated frames, segmentation), the toy TAE's decoder fine-tuned to draw what
# edits make ($EXPORT/tae_edit: the latent space stays), stage III (backtranslation by the stage II model), the
# export of stage III to $EXPORT/dit_edit and the table of the three stages and the per-frame baseline
# (tools/eval_toy_edits.py). Everything goes to $RUN (default runs/toy). Running it again continues.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toy_common.sh
EXPORT=${EXPORT:-checkpoints/toy}
TAE="$EXPORT/tae.safetensors"

edit_data() {  # edit_data <stage> [options]: write edit_stage<N>.csv once, then cache what it names
  local stage=$1
  shift
  [ -f "$RUN/data/edit_stage$stage.csv" ] || python tools/make_toy_edit_data.py "stage$stage" --data_folder "$RUN/data" "$@"
  cache "$TAE" "$EXPORT" "edit_stage$stage"
}

edit_stage() {  # edit_stage <stage> <starting checkpoint>: train, then export to $RUN/dit_edit_stage<N>/model
  local stage=$1 start=$2 configs=(--config configs/train/toy_edit_stage1.yaml)
  [ "$stage" = 1 ] || configs+=(--config "configs/train/toy_edit_stage$stage.yaml")
  train_stage configs/train/toy_stage2_t2iv.yaml "$RUN/dit_edit_stage$stage" "$TAE" "${configs[@]}" \
    --train.output_path "$RUN/dit_edit_stage$stage" --dataset.csv_path "$RUN/data/edit_stage$stage.csv" \
    --valid.csv_path "$RUN/data/heldout.csv" --model.pretrained_model_path "$start"
  python tools/export_dit.py --checkpoint "$RUN/dit_edit_stage$stage/ckpt" --output "$RUN/dit_edit_stage$stage/model" \
    --overwrite true
}

make_data
cache "$TAE" "$EXPORT"
edit_data 1
edit_stage 1 "$EXPORT/dit_conditioned.safetensors"
edit_data 2
edit_stage 2 "$RUN/dit_edit_stage1/model.safetensors"
[ -f "$RUN/data/edit_tae.csv" ] || python tools/make_toy_edit_data.py tae --data_folder "$RUN/data"
[ -f "$RUN/tae_edit/tae.safetensors" ] || python tools/train_tae.py --config configs/tae/train_toy.yaml \
  --config configs/tae/train_toy_edit.yaml --model.init_from "$TAE" --data.csv_path "$RUN/data/edit_tae.csv" \
  --train.output_path "$RUN/tae_edit" $([ -f "$RUN/tae_edit/config.yaml" ] && echo "--train.resume latest")
cp "$RUN/tae_edit/tae.safetensors" "$EXPORT/tae_edit.safetensors"
cp "$RUN/tae_edit/tae.json" "$EXPORT/tae_edit.json"
edit_data 3 --config configs/train/toy_edit_backtranslate.yaml --model.dit_checkpoint "$RUN/dit_edit_stage2/model.safetensors"
edit_stage 3 "$RUN/dit_edit_stage2/model.safetensors"
cp "$RUN/dit_edit_stage3/model.safetensors" "$EXPORT/dit_edit.safetensors"
cp "$RUN/dit_edit_stage3/model.json" "$EXPORT/dit_edit.json"

python tools/eval_toy_edits.py --config configs/inference/toy.yaml --config configs/inference/toy_edit.yaml --csv "$RUN/data/heldout.csv" \
  --models "{stage I: $RUN/dit_edit_stage1/model.safetensors, stage II: $RUN/dit_edit_stage2/model.safetensors, stage III: $EXPORT/dit_edit.safetensors}" \
  --per_frame_model "$RUN/dit_edit_stage1/model.safetensors" --output_path "$RUN/eval_edits"
