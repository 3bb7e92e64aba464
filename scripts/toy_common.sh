# Sourced by scripts/train_toy*.sh: the toy world's data, caches and DiT training steps. RUN is the run folder.
RUN=${RUN:-runs/toy}
# 24 px shapes (3 latent pixels) rather than the default 16: a TAE this short reconstructs their shape, 16 px ones blur
SHAPE_SIZE=${SHAPE_SIZE:-24}
export GLOG_v=3

make_data() {
  [ -f "$RUN/data/heldout.csv" ] || python tools/make_toy_dataset.py --output_folder "$RUN/data" --shape_size "$SHAPE_SIZE"
}

# cache <tae checkpoint> <text encoders folder> [CSV names in $RUN/data, default train heldout]: latents and
# embeddings of every file and caption the CSVs name (the caches skip files that exist). Text lengths: the longest
# toy prompts are "FPS-8 make the background white" at 33 UL2 tokens and "FPS-8 a yellow triangle moving right, 8 fps"
# at 38 MetaCLIP tokens (the tiny encoders spell most words in characters). Padding is masked, so a shorter pad
# changes no output, only the cost of every DiT step (text tokens are cross-attention keys in every block)
cache() {
  local tae=$1 encoders=$2
  shift 2
  local buckets='[{height: 64, width: 64, frames: 1, batch_size: 32}, {height: 64, width: 64, frames: 17, batch_size: 16}]'
  for split in ${@:-train heldout}; do
    python tools/cache_tae_latents.py --csv_path "$RUN/data/$split.csv" --video_folder "$RUN/data" \
      --output_folder "$RUN/cache/latents" --buckets "$buckets" --tae_checkpoint "$tae" --batch_size 8
    python tools/cache_text_embeddings.py --csv_path "$RUN/data/$split.csv" --video_folder "$RUN/data" \
      --output_folders "{ul2: $RUN/cache/ul2, metaclip: $RUN/cache/metaclip}" \
      --encoder_paths "{ul2: $encoders/ul2, metaclip: $encoders/metaclip}" \
      --max_lengths "{ul2: 40, metaclip: 48}"
  done
}

# train_stage <config> <output dir> <tae checkpoint> [train.py options]: a finished or interrupted run resumes (a
# finished one stops at once)
train_stage() {
  local config=$1 output=$2 tae=$3
  shift 3
  python train.py --config "$config" --train.output_path "$output" --tae.path "$tae" \
    --dataset.csv_path "$RUN/data/train.csv" --dataset.video_folder "$RUN/data" \
    --dataset.tae_latent_folder "$RUN/cache/latents" \
    --dataset.text_emb_folders "{ul2: $RUN/cache/ul2, metaclip: $RUN/cache/metaclip}" \
    $([ -f "$output/config.yaml" ] && echo "--train.resume latest") "$@"
}
