#!/usr/bin/env bash
# The toy world end to end on a CPU: synthetic shape videos -> a small TAE -> cached latents and text embeddings
# -> DiT stage 1 (images) -> stage 2 (images + videos) -> exported checkpoints -> prompt-adherence evaluation.
# Everything goes to $RUN (default runs/toy); the final models are copied to $EXPORT (default checkpoints/toy).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/toy}
EXPORT=${EXPORT:-checkpoints/toy}
TAE_STEPS=${TAE_STEPS:-800}
export GLOG_v=3

python tools/make_toy_dataset.py --output_folder "$RUN/data"

python tools/train_tae.py --config configs/tae/train_toy.yaml --data.csv_path "$RUN/data/train.csv" \
  --data.video_folder "$RUN/data" --train.output_dir "$RUN/tae" --train.steps "$TAE_STEPS"

python tools/make_tiny_text_encoders.py "$RUN/text_encoders" --kinds "[ul2, metaclip]" --hidden_size 64 \
  --num_layers 2 --num_heads 4 --max_positions 64 \
  --words "[a, red, green, blue, yellow, circle, square, triangle, moving, left, right, up, down, fps, still, image]"

BUCKETS='[{height: 64, width: 64, frames: 1, batch_size: 32}, {height: 64, width: 64, frames: 17, batch_size: 16}]'
for split in train heldout; do
  python tools/cache_tae_latents.py --csv_path "$RUN/data/$split.csv" --video_folder "$RUN/data" \
    --output_folder "$RUN/cache/latents" --buckets "$BUCKETS" --tae_checkpoint "$RUN/tae/tae.safetensors"
  python tools/cache_text_embeddings.py --csv_path "$RUN/data/$split.csv" --video_folder "$RUN/data" \
    --output_folders "{ul2: $RUN/cache/ul2, metaclip: $RUN/cache/metaclip}" \
    --encoder_paths "{ul2: $RUN/text_encoders/ul2, metaclip: $RUN/text_encoders/metaclip}" \
    --max_lengths "{ul2: 64, metaclip: 64}"
done

python train.py --config configs/train/toy_stage1_t2i.yaml
python train.py --config configs/train/toy_stage2_t2iv.yaml \
  --model.pretrained_model_path "$(ls "$RUN"/dit_stage1/ckpt/step_*.safetensors | tail -n 1)"

mkdir -p "$EXPORT"
python tools/export_dit.py --checkpoint "$RUN/dit_stage2/ckpt" --output "$EXPORT/dit" --overwrite true
cp "$RUN/tae/tae.safetensors" "$RUN/tae/tae.safetensors.json" "$EXPORT/"
for kind in ul2 metaclip; do rm -rf "${EXPORT:?}/$kind"; cp -r "$RUN/text_encoders/$kind" "$EXPORT/$kind"; done

python tools/eval_toy.py generate --config configs/inference/toy.yaml --csv "$RUN/data/heldout.csv" \
  --output_path "$RUN/eval"
