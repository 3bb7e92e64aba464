#!/usr/bin/env bash
# The toy world's personalization model (Movie Gen's personalized video, docs/personalization.md) on a CPU, from the
# committed stage-2 text-to-video toy model: the subjects' data (tools/make_toy_subject_data.py), the toy reference
# tower ($EXPORT/vision, tools/make_toy_vision_tower.py: made once, kept if present), the toy TAE fine-tuned on the
# subjects ($EXPORT/tae_subjects), caches with it and the committed text encoders, stage I (paired references, still
# images, tower frozen), stage II (paired, with videos, frozen), stage III (cross-paired, tower fine-tuned), the
# paper's ablation of stage III with the tower frozen, the SFT (curated paired and cross-paired clips, 1:1), the
# export of the SFT model to $EXPORT/dit_personalize and the table of every stage on unseen subjects
# (tools/eval_toy_personalization.py). Everything goes to $RUN (default runs/toy_subjects). Running it again continues.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/toy_subjects}
source scripts/toy_common.sh
EXPORT=${EXPORT:-checkpoints/toy}
TAE="$RUN/tae/tae.safetensors"

[ -f "$RUN/data/heldout.csv" ] || python tools/make_toy_subject_data.py --output_folder "$RUN/data"
[ -f "$RUN/data/train_paired_images.csv" ] || python -c "import pandas as pd, sys
table = pd.read_csv(sys.argv[1], dtype=str, keep_default_na=False)
table[table['frames'] == '1'].to_csv(sys.argv[2], index=False)" "$RUN/data/train_paired.csv" "$RUN/data/train_paired_images.csv"
[ -d "$EXPORT/vision" ] || python tools/make_toy_vision_tower.py --output_folder "$EXPORT/vision"
[ -f "$TAE" ] || python tools/train_tae.py --config configs/tae/train_toy.yaml \
  --config configs/tae/train_toy_subjects.yaml --data.csv_path "$RUN/data/train_paired.csv" \
  --data.video_folder "$RUN/data" --train.output_path "$RUN/tae" \
  $([ -f "$RUN/tae/config.yaml" ] && echo "--train.resume latest")
cp "$RUN/tae/tae.safetensors" "$EXPORT/tae_subjects.safetensors"
cp "$RUN/tae/tae.json" "$EXPORT/tae_subjects.json"
cache "$TAE" "$EXPORT" train_paired train_cross heldout

stage() {  # stage <N> <CSV in $RUN/data> <output> <starting checkpoint> [train.py options]: train, export to <output>/model
  local n=$1 csv=$2 output=$3 start=$4 configs=()
  shift 4
  for k in $(seq 1 "$n"); do configs+=(--config "configs/train/toy_personalize_stage$k.yaml"); done
  train_stage configs/train/toy_stage2_t2iv.yaml "$output" "$TAE" "${configs[@]}" --train.output_path "$output" \
    --dataset.csv_path "$RUN/data/$csv.csv" --model.reference_encoder_path "$EXPORT/vision" \
    --model.pretrained_model_path "$start" "$@"
  python tools/export_dit.py --checkpoint "$output/ckpt" --output "$output/model" --overwrite true
}

stage 1 train_paired_images "$RUN/stage1" "$EXPORT/dit_stage2.safetensors"
stage 2 train_paired "$RUN/stage2" "$RUN/stage1/model.safetensors"
stage 3 train_cross "$RUN/stage3" "$RUN/stage2/model.safetensors"
stage 3 train_cross "$RUN/stage3_frozen" "$RUN/stage2/model.safetensors" --model.freeze_reference_encoder true
# SFT: the most centred fully visible videos of each pairing (written beside the data, so the caches serve them),
# mixed 1:1, fine-tuning stage III with a cosine learning rate
for pairing in paired cross; do
  [ -f "$RUN/data/sft_$pairing.csv" ] || python tools/curate_videos.py select --csv "$RUN/data/train_$pairing.csv" \
    --scorer toy --min "{frames: 17, visible: 1.0}" --top 160 --by centred --output "$RUN/data/sft_$pairing.csv"
done
[ -f "$RUN/data/sft_mix.csv" ] || python tools/curate_videos.py mix \
  --csvs "[$RUN/data/sft_paired.csv, $RUN/data/sft_cross.csv]" --output "$RUN/data/sft_mix.csv"
stage 3 sft_mix "$RUN/sft" "$RUN/stage3/model.safetensors" --config configs/train/toy_personalize_sft.yaml \
  --dataset.csv_path "$RUN/data/sft_mix.csv" --train.output_path "$RUN/sft"
python tools/export_dit.py --checkpoint "$RUN/sft/ckpt" --output "$EXPORT/dit_personalize" --overwrite true

python tools/eval_toy_personalization.py --config configs/inference/toy.yaml \
  --config configs/inference/toy_personalize.yaml --csv "$RUN/data/heldout.csv" \
  --models "{stage I: $RUN/stage1/model.safetensors, stage II (paired only): $RUN/stage2/model.safetensors,
             stage III: $RUN/stage3/model.safetensors, stage III (tower frozen): $RUN/stage3_frozen/model.safetensors,
             SFT: $RUN/sft/model.safetensors}" \
  --tae_ceiling true --output_path "$RUN/eval"
