#!/usr/bin/env bash
# The toy world end to end on a CPU: synthetic shape videos -> a small TAE -> cached latents and text embeddings
# -> DiT stage 1 (images) -> stage 2 (images + videos) -> exported checkpoints -> prompt-adherence evaluation.
# Everything goes to $RUN (default runs/toy); the models are copied to $EXPORT (default checkpoints/toy): the
# transformer as dit_stage2, which scripts/train_toy_stage4.sh fine-tunes into the committed dit.
# Running it again continues: finished stages are skipped, an interrupted training resumes from its last checkpoint.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/toy_common.sh
EXPORT=${EXPORT:-checkpoints/toy}
# 700 TAE steps: 14.7 min on an idle 2-core CPU, over half of the whole script's 27 min; the config's 1000 steps
# (30.5 dB PSNR on 16 px shapes, tools/benchmark_tae_psnr.py) add ~4.5 min and did not follow prompts better (README)
TAE_STEPS=${TAE_STEPS:-700}

make_data

if [ ! -f "$RUN/tae/tae.safetensors" ]; then
  python tools/train_tae.py --config configs/tae/train_toy.yaml --data.csv_path "$RUN/data/train.csv" \
    --data.video_folder "$RUN/data" --train.output_path "$RUN/tae" --train.steps "$TAE_STEPS" \
    $([ -f "$RUN/tae/config.yaml" ] && echo "--train.resume latest")
fi

[ -d "$RUN/text_encoders/metaclip" ] || python tools/make_tiny_text_encoders.py "$RUN/text_encoders" \
  --kinds "[ul2, metaclip]" --hidden_size 64 --num_layers 2 --num_heads 4 --max_positions 64 \
  --words "[a, red, green, blue, yellow, circle, square, triangle, moving, left, right, up, down, fps, still, image]"

cache "$RUN/tae/tae.safetensors" "$RUN/text_encoders"
train_stage configs/train/toy_stage1_t2i.yaml "$RUN/dit_stage1" "$RUN/tae/tae.safetensors"
train_stage configs/train/toy_stage2_t2iv.yaml "$RUN/dit_stage2" "$RUN/tae/tae.safetensors" \
  --valid.csv_path "$RUN/data/heldout.csv" \
  --model.pretrained_model_path "$(ls "$RUN"/dit_stage1/ckpt/step_*.safetensors | tail -n 1)"

mkdir -p "$EXPORT"
python tools/export_dit.py --checkpoint "$RUN/dit_stage2/ckpt" --output "$EXPORT/dit_stage2" --overwrite true
rm -f "$EXPORT"/tae.*  # the TAE's sidecar is tae.json, or tae.safetensors.json if it was saved before mg.io
cp "$RUN/tae/tae.safetensors" "$RUN"/tae/tae*.json "$EXPORT/"
for kind in ul2 metaclip; do rm -rf "${EXPORT:?}/$kind"; cp -r "$RUN/text_encoders/$kind" "$EXPORT/$kind"; done

python tools/eval_toy.py generate --config configs/inference/toy.yaml --csv "$RUN/data/heldout.csv" \
  --seen_csv "$RUN/data/train.csv" --seen_combos 8 --output_path "$RUN/eval" \
  --model.dit_checkpoint "$EXPORT/dit_stage2.safetensors" --model.tae_checkpoint "$EXPORT/tae.safetensors" \
  --model.text_encoder_paths "{ul2: $EXPORT/ul2, metaclip: $EXPORT/metaclip}"
