#!/usr/bin/env bash
# Rebuild the speech corpus and retrain the shipped speech autoencoder from scratch, seeded.
#   bash scripts/retrain_autoencoder.sh [WORKDIR]
# Measured on the 2-core CPU (Nov 2026): corpus of 2500 + 400 utterances (5 voices, 2.9 h of audio)
# in ~3 min (flite must be installed: apt-get install flite); 5000 training steps of batch 8 x 1 s
# took 50 min with 2 threads (0.45 s/step on an idle machine, ~1.2 s/step when shared).
# On a GPU pass --device cuda (the recipe is the same).
set -euo pipefail
work="${1:-work}"
device="${DEVICE:-cpu}"
audioguide data speech -o "$work/corpus/speech" --sentences 500 --held-out 40 --seed 0 \
  --teacher hibari-heart --teacher flite-slt --teacher flite-rms --teacher flite-awb --teacher flite-kal16
audioguide train autoencoder-speech --data "$work/corpus/speech/train.jsonl" -o "$work/runs/autoencoder" \
  --device "$device" --threads 2
python scripts/ship_weights.py "$work/runs/autoencoder/model.safetensors" audioguide/weights/autoencoder-speech.safetensors \
  --calibrate "$work/corpus/speech/train.jsonl"
audioguide eval codec autoencoder-speech --data "$work/corpus/speech/held_out.jsonl" --per-voice 10 \
  --report benchmarks/results/autoencoder_resynthesis.md
