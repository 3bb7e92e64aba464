#!/usr/bin/env bash
# The toy world's stage 4 (quality fine-tuning, docs/post_training.md) on a CPU, from the committed stage-2 toy model
# (scripts/train_toy.sh): a pool of clips of mixed quality, curated by score (tools/curate_videos.py), its latents and captions cached
# with the committed TAE and text encoders, three fine-tuning runs with different seeds, their average
# (tools/average_checkpoints.py), which becomes $EXPORT/dit (the committed model), one run with the pixel-space
# loss, and the table of all of them against the starting model (tools/eval_toy_quality.py). Everything else goes to
# $RUN (default runs/toy). Running it again continues.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toy_common.sh
EXPORT=${EXPORT:-checkpoints/toy}
TAE="$EXPORT/tae.safetensors"
START=${START:-$EXPORT/dit_stage2.safetensors}
SEEDS=${SEEDS:-0 1 2}
POOL="$RUN/pool"

make_data  # the held-out and seen combinations the table measures
[ -f "$POOL/pool.csv" ] || python tools/curate_videos.py pool --output_folder "$POOL" --shape_size "$SHAPE_SIZE" --seed 1
# thresholds between the clean clips' scores and the flawed ones' (docs/post_training.md has both)
[ -f "$POOL/curated.csv" ] || python tools/curate_videos.py select --csv "$POOL/pool.csv" \
  --min "{sharpness: 0.5, centred: 0.74, visible: 1.0}" --output "$POOL/curated.csv"
python tools/cache_tae_latents.py --csv_path "$POOL/curated.csv" --video_folder "$POOL" \
  --output_folder "$RUN/cache/pool_latents" --buckets '[{height: 64, width: 64, frames: 17, batch_size: 16}]' \
  --tae_checkpoint "$TAE" --batch_size 8
python tools/cache_text_embeddings.py --csv_path "$POOL/curated.csv" --video_folder "$POOL" \
  --output_folders "{ul2: $RUN/cache/ul2, metaclip: $RUN/cache/metaclip}" \
  --encoder_paths "{ul2: $EXPORT/ul2, metaclip: $EXPORT/metaclip}" --max_lengths "{ul2: 40, metaclip: 48}"

fine_tune() {  # fine_tune <output dir> <seed> [train.py options]; a finished or interrupted run resumes
  local output=$1 seed=$2
  shift 2
  python train.py --config configs/train/toy_stage4_sft.yaml --train.output_path "$output" \
    --model.pretrained_model_path "$START" --tae.path "$TAE" --env.seed "$seed" --dataloader.seed "$seed" \
    --dataset.csv_path "$POOL/curated.csv" --dataset.video_folder "$POOL" \
    --dataset.tae_latent_folder "$RUN/cache/pool_latents" \
    --dataset.text_emb_folders "{ul2: $RUN/cache/ul2, metaclip: $RUN/cache/metaclip}" \
    $([ -f "$output/config.yaml" ] && echo "--train.resume latest") "$@"
}

runs=()
for seed in $SEEDS; do
  fine_tune "$RUN/dit_stage4_sft_s$seed" "$seed"
  runs+=("$RUN/dit_stage4_sft_s$seed/ckpt")
done
fine_tune "$RUN/dit_stage4_pixel_s0" 0 --pixel_loss.weight 1.0
python tools/average_checkpoints.py --checkpoints "[$(IFS=,; echo "${runs[*]}")]" \
  --output "$EXPORT/dit" --overwrite true

python tools/eval_toy_quality.py --config configs/inference/toy.yaml --csv "$RUN/data/heldout.csv" \
  --seen_csv "$RUN/data/train.csv" --output_path "$RUN/eval_quality" \
  --models "{before: $START, SFT: ${runs[0]}, SFT + pixel loss: $RUN/dit_stage4_pixel_s0/ckpt, average of ${#runs[@]}: $EXPORT/dit.safetensors}"
