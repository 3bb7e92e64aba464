#!/usr/bin/env bash
# The toy world's conditioned model (image-to-video, continuation, inpainting) on a CPU, from the committed
# stage-2 text-to-video toy model: data and caches made with the committed TAE and text encoders (no retraining), a
# fine-tune with condition channels (configs/train/toy_conditioned.yaml), the export to $EXPORT/dit_conditioned and
# the evaluation of image-to-video and continuation on held-out combinations (tools/eval_toy.py --given).
# Everything goes to $RUN (default runs/toy). Running it again continues.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toy_common.sh
EXPORT=${EXPORT:-checkpoints/toy}

make_data
cache "$EXPORT/tae.safetensors" "$EXPORT"
train_stage configs/train/toy_stage2_t2iv.yaml "$RUN/dit_conditioned" "$EXPORT/tae.safetensors" \
  --config configs/train/toy_conditioned.yaml --train.output_path "$RUN/dit_conditioned" \
  --valid.csv_path "$RUN/data/heldout.csv" --model.pretrained_model_path "$EXPORT/dit_stage2.safetensors"
python tools/export_dit.py --checkpoint "$RUN/dit_conditioned/ckpt" --output "$EXPORT/dit_conditioned" --overwrite true

for given in image continuation; do
  python tools/eval_toy.py generate --config configs/inference/toy.yaml --csv "$RUN/data/heldout.csv" \
    --output_path "$RUN/eval_$given" --given "$given" --num_seeds 2 \
    --model.dit_checkpoint "$EXPORT/dit_conditioned.safetensors"
done
