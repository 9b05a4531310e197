"""Cost of multi-condition guidance: one batched forward vs one forward per branch, and NFE saved
by the guidance interval and adaptive guidance.

Sequential per-branch evaluation is what MeanAudio, VoxInstruct and ACE-Step do (REFERENCE.md §4);
it is reimplemented here on the same network so the two patterns are compared in one run.

    python benchmarks/guidance_batching.py [--threads 2] [--out benchmarks/results/guidance_batching.md]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch
from torch import nn

from audioguide.guidance import Adaptive, Guidance, GuidedField
from audioguide.sampling import flow_times, sample_euler


class Backbone(nn.Module):
    """A DiT-sized stand-in (pre-norm transformer over latent frames, conditions added per row)."""

    def __init__(self, channels=64, dim=384, layers=6, heads=6):
        super().__init__()
        self.inp, self.out = nn.Linear(channels, dim), nn.Linear(dim, channels)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, batch_first=True, norm_first=True, dropout=0.0)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.cond = nn.ParameterDict({n: nn.Parameter(torch.randn(dim) * 0.1) for n in ("text", "speaker")})
        self.null = nn.ParameterDict({n: nn.Parameter(torch.randn(dim) * 0.1) for n in ("text", "speaker")})

    def forward(self, x, t, cond, keep, **extra):
        h = self.inp(x.transpose(1, 2)) + t.view(-1, 1, 1)
        for n in ("text", "speaker"):
            k = keep.get(n, torch.ones(x.shape[0], dtype=torch.bool)).view(-1, 1, 1)
            h = h + torch.where(k, self.cond[n], self.null[n]) * (1 + cond[n].view(-1, 1, 1))
        return self.out(self.body(h)).transpose(1, 2)


def sequential_field(model, cond, s_t, s_s):
    """Nested text/speaker CFG with one forward per branch (the peers' pattern)."""

    def field(x, t):
        B = x.shape[0]
        t = torch.as_tensor(t).expand(B)
        branch = lambda kt, ks: model(x, t, cond, {"text": torch.full((B,), kt), "speaker": torch.full((B,), ks)})  # noqa: E731
        u00, ut0, uts = branch(False, False), branch(True, False), branch(True, True)
        return u00 + s_t * (ut0 - u00) + s_s * (uts - ut0)

    return field


def timed(fn, repeats):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=250)
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "guidance_batching.md")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    model = Backbone().eval()
    params = sum(p.numel() for p in model.parameters()) / 1e6
    rows = []
    with torch.inference_mode():
        for batch in (1, 4):
            cond = {"text": torch.randn(batch, generator=g), "speaker": torch.randn(batch, generator=g)}
            x = torch.randn(batch, 64, args.frames, generator=g)
            ts = flow_times(args.steps, "uniform")
            policy = Guidance(scales={"text": 3.0, "speaker": 1.5})
            batched = timed(lambda: sample_euler(GuidedField(model, cond, policy), x, ts), args.repeats)
            seq = timed(lambda: sample_euler(sequential_field(model, cond, 3.0, 1.5), x, ts), args.repeats)
            rows.append(("nested text+speaker CFG, 3 branches", batch, "one batched forward", batched, seq / batched, 3 * args.steps))
            rows.append(("nested text+speaker CFG, 3 branches", batch, "one forward per branch (peers)", seq, 1.0, 3 * args.steps))
            for label, pol in [
                ("+ guidance interval (0, 0.7]", Guidance(scales={"text": 3.0, "speaker": 1.5}, interval=(0.0, 0.7))),
                ("+ adaptive guidance, cos >= 0.99", Guidance(scales={"text": 3.0, "speaker": 1.5}, adaptive=Adaptive(0.99, 2))),
            ]:
                fields = []

                def run():
                    f = GuidedField(model, cond, pol)
                    fields.append(f)
                    sample_euler(f, x, ts)

                sec = timed(run, args.repeats)
                nfe = fields[-1].rows_evaluated / batch
                rows.append((label, batch, "one batched forward", sec, seq / sec, nfe))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Guidance batching benchmark",
        "",
        f"Machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} threads; "
        f"backbone: {params:.1f}M-parameter transformer, {args.frames} latent frames, Euler {args.steps} steps. "
        "Best of {0} runs. `speed-up` is the time of per-branch evaluation divided by this row's time (higher is better); "
        "`rows/sample` counts network evaluations per sample (branches x steps).".format(args.repeats),
        "",
        "| policy | batch | evaluation | seconds / generation | speed-up vs per-branch | rows / sample |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {a} | {b} | {c} | {d:.3f} | {e:.2f}x | {f:.0f} |" for a, b, c, d, e, f in rows]
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
