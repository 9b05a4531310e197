"""Decoding speed of the codec LM vs transformers' MusicGen decoder, same size, same CFG batch.

Both sides are decoder-only transformers over ``K`` delayed codebooks of ``V`` codes with random
weights (speed does not depend on the values; no weights are downloaded), built at equal width,
depth, heads, MLP width, codebooks and vocabulary (defaults: the shipped ``speech-lm`` recipe's
192 x 4 layers, 8 x 1024 codes), and both decode ``frames`` frames (``frames + K - 1`` delayed
steps) of a batch of ``batch`` with classifier-free guidance over 2 branches in one batched forward
(checked: every forward of either side runs ``2 * batch`` rows), sampling with temperature 1 and
top-k 250 (MusicGen's default), each through its own loop:

* ours: :func:`audioguide.sampling.tokens.sample_codec_lm` with ``Guidance(scales={"text": 3})``
  (the conditioned and the null branch; a short in-context text prefix per row, up to 31 tokens,
  the null rows' prefix padded), static KV cache, top-k draw;
* peer: ``MusicgenForCausalLM.generate(do_sample=True, top_k=250, guidance_scale=3)``, which
  doubles the batch for CFG itself (``prepare_inputs_for_generation``), combines the halves in
  ``ClassifierFreeGuidanceLogitsProcessor`` and draws with ``TopKLogitsWarper`` then
  ``torch.multinomial`` over the vocabulary; its default dynamic KV cache; no encoder states (its
  decoder-only class has no cross-attention cache), so its prompt is the bos column alone and its
  attention spans up to 31 keys fewer than ours.

The sides alternate call by call (``repeats`` timed calls each, after one untimed warm-up each);
tokens/s = ``batch * K * frames`` / seconds of one call, prefill and setup included; the table
gives medians and ``ours / peer`` (> 1: ours faster). Our model keeps its shipped architecture
(RoPE, QK-norm, MLP biases), the peer its own (sinusoidal positions, no biases).

    python benchmarks/lm_decode_speed.py [--threads 1] [--frames 100 300] [--repeats 5] [--report benchmarks/results/lm_decode_speed.md]
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

from audioguide.conditioners import Characters
from audioguide.guidance import Guidance
from audioguide.models.codec_lm import CodecLM, CodecLMConfig
from audioguide.sampling.tokens import sample_codec_lm

TEXTS = ("hello there, how are you today?", "a short one", "the quick brown fox jumps", "over the lazy dog, twice")


def ours(args, rows: list[int]):
    """Our codec LM; ``call(frames, seed)`` decodes ``frames`` frames of ``args.batch`` rows. Every
    step's row count goes to ``rows``."""
    cfg = CodecLMConfig(dim=args.dim, depth=args.depth, heads=args.heads, mlp_ratio=4.0, codebook_size=args.vocab)
    model = CodecLM(cfg, args.codebooks, {"text": Characters(Characters.Config(dim=64))}).eval()
    cond = model.encode({"text": [TEXTS[i % len(TEXTS)] for i in range(args.batch)]})
    policy = Guidance(scales={"text": args.cfg})
    step = model.step

    def counted(cache, tokens):
        rows.append(tokens.shape[0])
        return step(cache, tokens)

    model.step = counted

    def call(frames: int, seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return sample_codec_lm(model, cond, frames, policy, g, temperature=1.0, top_k=args.top_k)

    return model, call


def peer(args, rows: list[int]):
    """transformers' ``MusicgenForCausalLM`` at the same size and its ``generate``, as ``call(frames, seed)``."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    torch.manual_seed(0)
    cfg = MusicgenDecoderConfig(
        vocab_size=args.vocab, hidden_size=args.dim, num_hidden_layers=args.depth, num_attention_heads=args.heads,
        ffn_dim=4 * args.dim, num_codebooks=args.codebooks, max_position_embeddings=max(args.frames) + args.codebooks + 8,
        pad_token_id=args.vocab, bos_token_id=args.vocab, dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
    )
    model = MusicgenForCausalLM(cfg).eval()
    gc = model.generation_config  # what a released checkpoint's generation_config.json sets
    gc.bos_token_id = gc.pad_token_id = gc.decoder_start_token_id = args.vocab
    gc.num_return_sequences, gc.use_cache = 1, True
    model.register_forward_pre_hook(lambda m, a, kw: rows.append(kw["input_ids"].shape[0] // args.codebooks), with_kwargs=True)
    bos = torch.full((args.batch * args.codebooks, 1), args.vocab, dtype=torch.long)

    def call(frames: int, seed: int) -> torch.Tensor:
        torch.manual_seed(seed)  # generate draws from the global generator
        out = model.generate(
            bos, do_sample=True, top_k=args.top_k, temperature=1.0, guidance_scale=args.cfg,
            max_length=frames + args.codebooks, min_length=frames + args.codebooks,
        )
        return out.reshape(args.batch, args.codebooks, -1)

    return model, call


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dim", type=int, default=192)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--codebooks", type=int, default=8)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, nargs="+", default=[100, 300])
    ap.add_argument("--top-k", type=int, default=250)
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per side and length, alternating; medians reported")
    ap.add_argument("--report", type=Path, help="write the Markdown table here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    K, B = args.codebooks, args.batch
    label = {
        "ours": "audioguide CodecLM (`sample_codec_lm`)",
        "peer": f"MusicgenForCausalLM (`generate`, transformers {transformers.__version__})",
    }
    lines = [
        "# Codec LM decoding speed: ours vs MusicGen's decoder",
        "",
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s). "
        f"Both sides: width {args.dim}, depth {args.depth}, {args.heads} heads, MLP {4 * args.dim}, {K} codebooks x {args.vocab} codes, "
        f"random weights; batch {B} x 2 CFG branches (scale {args.cfg:g}) in one batched forward, temperature 1, top-k {args.top_k}; "
        f"each side's own decoding loop (see the script's docstring). Median of {args.repeats} alternating calls per side after one "
        "warm-up; tokens/s = batch x codebooks x frames / seconds of a call (prefill included); `ours / peer` > 1: ours faster.",
        "",
        "| frames (delayed steps) | decoder | params (M) | seconds / call | ms / step | tokens / s | ours / peer |",
        "|---|---|---|---|---|---|---|",
    ]
    calls = []
    with torch.inference_mode():
        sides = {}
        for name, build in (("ours", ours), ("peer", peer)):
            rows: list[int] = []
            model, call = build(args, rows)
            sides[name] = (call, rows, sum(p.numel() for p in model.parameters()) / 1e6)
        for frames in args.frames:
            steps = frames + K - 1
            seconds = {name: [] for name in sides}
            for name, (call, rows, _) in sides.items():  # untimed warm-up: the shapes and the rows each side runs
                rows.clear()
                out = call(frames, 0)
                if tuple(out.shape) != (B, K, frames):
                    raise SystemExit(f"{name} gave codes of shape {tuple(out.shape)}, not {(B, K, frames)}")
                if set(rows) != {2 * B} or len(rows) != steps:
                    raise SystemExit(f"{name} ran {len(rows)} forwards of {sorted(set(rows))} rows, not {steps} of {2 * B}")
            for r in range(args.repeats):
                for name, (call, _, _) in sides.items():  # interleaved: drift of this shared machine hits both alike
                    t = time.perf_counter()
                    call(frames, r + 1)
                    seconds[name].append(time.perf_counter() - t)
            med = {name: statistics.median(s) for name, s in seconds.items()}
            for name in sides:
                s = med[name]
                lines.append(
                    f"| {frames} ({steps}) | {label[name]} | {sides[name][2]:.2f} | {s:.3f} | {1000 * s / steps:.2f} | "
                    f"{B * K * frames / s:.0f} | {med['peer'] / s:.2f}x |"
                )
                print(lines[-1], flush=True)
            calls.append(f"{frames} frames: " + "; ".join(f"{n} " + " ".join(f"{t:.3f}" for t in s) for n, s in seconds.items()))
    lines += [
        "",
        "All timed calls, seconds: " + " | ".join(calls),
        "",
        "Command: `python " + " ".join(shlex.quote(a) for a in ["benchmarks/lm_decode_speed.py", *sys.argv[1:]]) + "`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.report:
        from audioguide.core import atomic_write

        with atomic_write(args.report) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
