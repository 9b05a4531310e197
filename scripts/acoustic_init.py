"""Start the acoustic stage's token table where its phoneme table was: each token as the phonemes it stands for.

    python scripts/acoustic_init.py TOKENS_MANIFEST SPEECH_WEIGHTS INIT_WEIGHTS [--rows 1500]

INIT_WEIGHTS is the acoustic stage's warm start (scripts/warm_start.py: speech's DiT with a fresh
token table); it is rewritten in place. Over the rows of TOKENS_MANIFEST (``audioguide data tokens``
output, with the teacher alignments ``phoneme_samples``), every latent frame has its token and its
teacher phoneme; token ``v``'s embedding becomes ``sum_p P(p | v) E[p]``, ``E`` the phoneme table of
SPEECH_WEIGHTS and ``P(p | v)`` the share of v's frames that phoneme p fills (unseen tokens: the
mean phoneme). The warm-started encoder then reads each token as the mix of phonemes it was taken
from, instead of learning 1000 new symbols from nothing; the coordinate map starts at zero.
"""

from __future__ import annotations

import argparse
import json

import torch

from audioguide.checkpoints import load_checkpoint, save_checkpoint
from audioguide.conditioners.phonemes import SYMBOLS, Phonemes, PhonemesConfig
from audioguide.models.duration import frame_tokens, samples_to_frames

FRAMES_PER_TOKEN, HOP, SAMPLE_RATE = 4, 256, 24000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("tokens")
    ap.add_argument("speech")
    ap.add_argument("init")
    ap.add_argument("--rows", type=int, default=1500)
    args = ap.parse_args()
    import soundfile as sf

    phonemes = Phonemes(PhonemesConfig(dim=8, edges=True))
    init = load_checkpoint(args.init)
    tensors = dict(init.tensors)
    table = tensors["conditioners.tokens.table.weight"]
    counts = torch.zeros(table.shape[0] - 1, len(SYMBOLS), dtype=torch.float64)
    rows = [json.loads(line) for line in open(args.tokens, encoding="utf-8")]
    step = max(1, len(rows) // args.rows)
    for row in rows[::step]:
        ids = phonemes.ids([row["text"]])[0][0]
        samples = row["phoneme_samples"]
        if len(samples) != len(ids):
            continue
        info = sf.info(row["audio"])
        length = int(round(info.frames * SAMPLE_RATE / info.samplerate))
        frames = -(-length // HOP)
        durations = samples_to_frames([samples], HOP, [frames], len(ids), [length])
        target = ids[frame_tokens(durations, frames)[0]]  # the phoneme of every frame
        tokens = torch.tensor([int(t) for t in row["tokens"].split()]).repeat_interleave(FRAMES_PER_TOKEN)[:frames]
        counts.index_put_((tokens, target[: len(tokens)]), torch.ones(len(tokens), dtype=torch.float64), accumulate=True)
    E = load_checkpoint(args.speech).tensors["conditioners.text.table.weight"].double()
    seen = counts.sum(1) > 0
    mixed = torch.where(seen[:, None], (counts / counts.sum(1, keepdim=True).clamp_min(1)) @ E, E[1:].mean(0))
    tensors["conditioners.tokens.table.weight"] = torch.cat([table[:1], mixed.to(table.dtype)])
    tensors["conditioners.tokens.coords.weight"] = torch.zeros_like(tensors["conditioners.tokens.coords.weight"])
    save_checkpoint(args.init, tensors, init.config, init.kind)
    print(f"{int(seen.sum())} of {len(seen)} tokens seen over {len(rows[::step])} rows; wrote {args.init}")


if __name__ == "__main__":
    main()
