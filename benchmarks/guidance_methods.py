"""Every guidance method on the shipped recipes: one table (issue 24).

Speech (recipe ``speech``): WER on the held-out and semantically unpredictable splits through Whisper
base, speaker accuracy by the real-audio speaker judge, network rows per clip (NFE summed over the
sampler's steps; a guided step of two branches counts 2) and RTF. Sound (recipe ``sound``): prompt
adherence by the real-audio sound judge, Fréchet distance of its embeddings to the real clips, NFE and
RTF. Each method is the shipped recipe with one change to its ``[guidance]`` (or its sampler / weights),
at the method's paper defaults where it has them; nothing is tuned on these sentences.

Every method runs on the same rows with the same seeds (row ``i`` draws from seed ``i``), so
differences are paired: the table gives each metric's 95 % bootstrap interval and the paired
interval of its difference to the recipe default (1000 resamples of rows, seeded). Results per
method are cached (``--cache``), so an interrupted run resumes and a new method adds one row.

    python benchmarks/guidance_methods.py speech --data held_out.jsonl --data sus.jsonl \\
        --classifier speakers.safetensors --per-voice 5 --report benchmarks/results/guidance_methods_speech.md
    python benchmarks/guidance_methods.py sound --data held_out.jsonl --classifier sounds.safetensors \\
        --per-class 5 --report benchmarks/results/guidance_methods_sound.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

RESAMPLES = 1000


# -- the methods ---------------------------------------------------------------------------------


def on_sampler(kind: str, scales: dict[str, float] | None = None, **config) -> Callable:
    """The recipe on another sampler (a mean-flow model on a flow ODE sampler: its instantaneous
    velocity u(z, t, t)), optionally with other guidance scales (CFG++ takes them in [0, 1])."""

    def f(r):
        from audioguide.recipes import Component
        from audioguide.registry import SAMPLERS

        r = dataclasses.replace(r, sampler=Component(kind, SAMPLERS[kind].Config(**config)))
        if scales is not None:
            merged = {**dict(r.guidance.scales), **scales}
            r = dataclasses.replace(r, guidance=dataclasses.replace(r.guidance, scales=tuple(merged.items())))
        return r

    return f


def on_recipe_grid(kind: str, scales: dict[str, float] | None = None, **config) -> Callable:
    """As :func:`on_sampler`, keeping the recipe's own time grid (schedule, shift, sway)."""

    def f(r):
        grid = {k: getattr(r.sampler.config, k) for k in ("schedule", "shift", "sway")}
        return on_sampler(kind, scales, **grid, **config)(r)

    return f


def speech_methods() -> list[tuple[str, str, Callable]]:
    """(label, what changes, recipe -> recipe) for the speech recipe (mean-flow DiT, 2 steps,
    text 2 on the second step)."""
    from audioguide.guidance import APG, PAG, STG, TCFG, Adaptive

    def g(**kw):
        return lambda r: dataclasses.replace(r, guidance=dataclasses.replace(r.guidance, **kw))

    def order(r):
        s = dict(r.guidance.scales)
        return dataclasses.replace(r, guidance=dataclasses.replace(
            r.guidance, scales=tuple((n, s[n]) for n in ("speaker", "style", "text"))))

    return [
        ("default", "CFG text 2 nested (text -> speaker -> style), second step only: the recipe", lambda r: r),
        ("no guidance", "text 1: one row per step", g(scales=(("text", 1.0), ("speaker", 1.0), ("style", 1.0)))),
        ("CFG both steps", "text 2 on both steps (no interval)", g(interval=None)),
        ("CFG two-row order", "scales ordered speaker -> style -> text: c + (c - u_speaker+style), 2 rows", order),
        ("CFG + rescale 0.7", "Lin et al. 2023, phi 0.7, native space", g(rescale=0.7)),
        ("APG", "Sadat et al. 2025, eta 0, r 15, beta -0.5, native space", g(apg=APG(space="native"))),
        ("CFG-Zero*", "Fan et al. 2025, optimised scale (no zero-init: average velocities)", g(zero_star=True)),
        ("TCFG", "Kwon et al. 2025, tangential damping of u (native space: eps is not defined for r < t)", g(tcfg=TCFG(space="native"))),
        ("CFG + PAG", "Ahn et al. 2024, w 2 (s 1), middle block", g(pag=PAG(scale=2.0, layers=(1,)))),
        ("CFG + STG", "Hyung et al. 2024, w 2 (s 1), middle block skipped", g(stg=STG(scale=2.0, layers=(1,)))),
        ("CFG + adaptive", "Castillo et al. 2025, cos >= 0.999 twice", g(adaptive=Adaptive())),
        ("Euler 8, CFG", "flow ODE on the instantaneous velocity u(z, t, t), 8 steps, same guidance", on_sampler("euler", steps=8)),
        ("Euler 8, CFG++", "Chung et al. 2024, lambda 0.5 for text (scales in [0, 1])", on_sampler("euler-cfgpp", {"text": 0.5}, steps=8)),
        ("Euler 8, PCG", "Bradley & Nakkiran 2024: conditional Euler step + 1 Langevin step (size 0.1) on the guided score", on_sampler("euler-pcg", steps=8, corrector_steps=1)),
    ]


def sound_methods() -> list[tuple[str, str, Callable]]:
    from audioguide.guidance import APG, PAG, STG, TCFG, Adaptive

    def g(**kw):
        return lambda r: dataclasses.replace(r, guidance=dataclasses.replace(r.guidance, **kw))

    return [
        ("default", "CFG 5 + rescale 0.7, 8 Euler steps on u(z, t, t), SD3's shifted grid (shift 3): the recipe since Dec 8", lambda r: r),
        ("no guidance", "cfg 1: one row per step", g(scales=(("caption", 1.0),), rescale=0.0)),
        ("plain CFG 5", "no rescale", g(rescale=0.0)),
        ("CFG 5 + APG", "Sadat et al. 2025, eta 0, r 15, beta -0.5, native space, instead of rescale", g(apg=APG(space="native"), rescale=0.0)),
        ("CFG-Zero* + rescale", "Fan et al. 2025, optimised scale", g(zero_star=True)),
        ("TCFG + rescale", "Kwon et al. 2025, native space", g(tcfg=TCFG(space="native"))),
        ("CFG + rescale + PAG", "Ahn et al. 2024, w 2, block 2", g(pag=PAG(scale=2.0, layers=(2,)))),
        ("CFG + rescale + STG", "Hyung et al. 2024, w 2, block 2 skipped", g(stg=STG(scale=2.0, layers=(2,)))),
        ("CFG + rescale + adaptive", "Castillo et al. 2025, cos >= 0.999 twice", g(adaptive=Adaptive())),
        ("CFG + rescale, interval", "guidance off for t > 0.75, the first 4 of 8 steps (Kynkäänniemi et al. 2024)", g(interval=(0.0, 0.75))),
        ("CFG + rescale, off at low noise", "guidance off for t <= 0.4, the last step (Kynkäänniemi et al. 2024's other end)", g(interval=(0.4, 1.0))),
        ("CFG + rescale, off below 0.6", "guidance off for t <= 0.6, the last two steps", g(interval=(0.6, 1.0))),
        ("Euler 8, uniform grid", "the same 8 steps on the uniform grid: the recipe from Dec 7 evening to Dec 8", on_sampler("euler", steps=8)),
        ("Euler 8, shift 2", "SD3's grid with shift 2 instead of 3", on_sampler("euler", steps=8, schedule="shift", shift=2.0)),
        ("Euler 4, shifted", "4 steps on the recipe's grid (`--steps 4`)", on_recipe_grid("euler", steps=4)),
        ("Euler 1", "one Euler step (`--steps 1`; one step has no grid to shift)", on_sampler("euler", steps=1)),
        ("Euler 12, shifted", "12 steps on the recipe's grid", on_recipe_grid("euler", steps=12)),
        ("Euler 16, shifted", "16 steps on the recipe's grid", on_recipe_grid("euler", steps=16)),
        ("mean-flow, 8 steps", "8 mean-flow steps on the average velocity u(z, r, t): the recipe until Dec 7", on_sampler("meanflow", steps=8)),
        ("mean-flow, 4 steps", "four mean-flow steps", on_sampler("meanflow", steps=4)),
        ("mean-flow, 1 step", "one mean-flow step", on_sampler("meanflow", steps=1)),
        ("Euler 8, CFG++", "Chung et al. 2024, lambda 0.6 (scales in [0, 1]), the recipe's grid", on_recipe_grid("euler-cfgpp", {"caption": 0.6}, steps=8)),
        ("Euler 8, PCG", "Bradley & Nakkiran 2024: conditional Euler step + 1 Langevin step (size 0.1) on the guided score, the recipe's grid",
         on_recipe_grid("euler-pcg", steps=8, corrector_steps=1)),
    ]


def extra_recipes(task: str, whole: str | None = None, adapter: str | None = None) -> list[tuple[str, str, Callable]]:
    """Methods that are recipes of their own (label, what, () -> recipe), where their weights exist.
    Students that are not shipped are measured from files given here: ``whole``, a student trained
    whole (every weight), in place of the distilled recipe's weights; ``adapter``, the guidance file
    of an adapter-only student (Jensen et al. 2025: the teacher's weights frozen, a zero-started
    adapter per block; at scale input 1 it is exactly the teacher), over the teacher's shipped file."""
    from audioguide.components import WEIGHTS_DIR, local_weights
    from audioguide.recipes import load_recipe

    def named(name, two_branch=False, model=None):
        def f():
            r = load_recipe(name)
            if model is not None:
                r = dataclasses.replace(r, model=model(r.model))
            if two_branch:  # the student's weights under the teacher's own two-branch CFG (scale input 1)
                r = dataclasses.replace(r, guidance=dataclasses.replace(r.guidance, distilled=False))
            return r
        return f

    def shipped(name):  # the recipe's weight files all exist
        r = load_recipe(name)
        return all(w is None or local_weights(w, r) is not None for w in (r.model.weights, r.model.guidance_weights))

    student, teacher = {"speech": ("speech-distilled", "speech.safetensors"), "sound": ("sound-distilled", "sound.safetensors")}[task]
    cond, scale = {"speech": ("text", "w 2"), "sound": ("caption", "w 5")}[task]
    out = []
    if shipped(student):
        out += [("distilled CFG", f"student with the {cond} scale as input (Meng et al. 2023), {scale}, 1 row", named(student)),
                ("distilled weights, two-branch CFG", "the student's weights, the recipe's CFG branches (scale input 1)", named(student, True))]
    if whole is not None:
        whole_model = lambda m: dataclasses.replace(m, weights=whole, guidance_weights=None)  # noqa: E731
        out += [("distilled CFG, whole student", f"every weight distilled (Meng et al. 2023; not shipped), {scale}, 1 row", named(student, model=whole_model)),
                ("whole student, two-branch CFG", "the whole student's weights, the recipe's CFG branches (scale input 1)",
                 named(student, True, whole_model))]
    if adapter is not None:
        def adapter_model(m):
            return dataclasses.replace(m, config=dataclasses.replace(m.config, guidance_adapters=True), weights=teacher, guidance_weights=adapter)
        out.append(("distilled CFG, adapter student", f"teacher frozen + scale adapters (Jensen et al. 2025; not shipped), {scale}, 1 row",
                    named(student, model=adapter_model)))
    dynamic = {"speech": ("dynamic CFG", "text scale in {1, 2, 3} per sample and step by the content verifier (Papalampidi et al. 2025)", "speech-dynamic", None),
               "sound": ("dynamic CFG", "caption scale in {1, 3, 5, 8} per sample and step by the latent caption verifier (Papalampidi et al. 2025)", "sound-dynamic", "verifier-sound.safetensors")}[task]
    if dynamic[3] is None or (Path(WEIGHTS_DIR) / dynamic[3]).exists():
        out.append((dynamic[0], dynamic[1], named(dynamic[2])))
    return out


# -- counting network rows -----------------------------------------------------------------------


class RowCounter:
    """Network rows evaluated (the batch size of every forward of the generator)."""

    def __init__(self, model) -> None:
        self.rows = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.rows += int(args[0].shape[0])


# -- statistics ----------------------------------------------------------------------------------


def item_errors(reference: str, transcript: str) -> tuple[int, int]:
    """(word edits, reference words) of one item after the judge's normaliser."""
    import jiwer

    from audioguide.evaluation.asr import normalize

    ref, hyp = normalize(reference), normalize(transcript)
    if not ref:
        return 0, 0
    out = jiwer.process_words(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, len(ref.split())


def ratio_ci(num: np.ndarray, den: np.ndarray, rng: np.random.Generator,
             resamples: int = RESAMPLES) -> tuple[float, float, float, np.ndarray]:
    """Corpus-level ratio sum(num)/sum(den) and its 95 % bootstrap interval; also the resampled indices."""
    n = len(num)
    idx = rng.integers(0, n, size=(resamples, n))
    boots = num[idx].sum(1) / np.maximum(den[idx].sum(1), 1e-9)
    return float(num.sum() / max(den.sum(), 1e-9)), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5)), idx


def paired_ci(num_a, den_a, num_b, den_b, idx) -> tuple[float, float, float]:
    """Difference of two corpus ratios over the same rows (b - a) and its paired 95 % interval."""
    d = num_b.sum() / max(den_b.sum(), 1e-9) - num_a.sum() / max(den_a.sum(), 1e-9)
    boots = num_b[idx].sum(1) / np.maximum(den_b[idx].sum(1), 1e-9) - num_a[idx].sum(1) / np.maximum(den_a[idx].sum(1), 1e-9)
    return float(d), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def cell(v, lo, hi) -> str:
    return f"{pct(v)} [{pct(lo)}, {pct(hi)}]"


def dcell(d, lo, hi) -> str:
    mark = " *" if lo > 0 or hi < 0 else ""
    return f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]{mark}"


# -- running -------------------------------------------------------------------------------------


def run_method(task, label, recipe, args, rows, clf):
    """One method's per-item results (a dict, JSON-able)."""
    from audioguide.pipeline import Pipeline

    pipe = Pipeline.from_recipe(recipe)
    counter = RowCounter(pipe.model)
    t0 = time.perf_counter()
    if task == "speech":
        from audioguide.evaluation.tts import evaluate_tts

        settings = [(label, dict(pipe.recipe.guidance.scales))]
        rep = evaluate_tts(pipe, rows, settings, args.judge, clf, seed=0, per_voice=args.per_voice, real=False)
        res = rep.results[0]
        items = []
        for it in res.items:
            e, w = item_errors(it.reference, it.transcript or "")
            items.append({"id": it.row_id, "split": it.split, "errors": e, "words": w,
                          "hit": float(it.predicted_voice == it.voice) if it.predicted_voice is not None else None,
                          "seconds": it.seconds, "synth": it.synthesis_seconds})
        clips = len(items) + 1  # + the warm-up call
        out = {"items": items, "fd": None}
    else:
        from audioguide.evaluation.sound import evaluate_t2a

        rep = evaluate_t2a(pipe, rows, clf, [(label, {})], seed=0, per_class=args.per_class)
        res = rep.results[0]
        items = [{"id": it.row_id, "hit": float(it.hit), "seconds": it.seconds, "synth": it.synthesis_seconds}
                 for it in res.items]
        clips = len(items) + 1
        out = {"items": items, "fd": res.fd}
    out["nfe"] = counter.rows / clips
    out["wall"] = time.perf_counter() - t0
    return out


def measure_speed(task, methods, rows, rounds: int, n: int) -> dict[str, float]:
    """Median RTF of each method over ``rounds`` interleaved rounds (every method once per round, in
    turn) on the same ``n`` texts / captions and seeds: the quality runs time each method once under
    whatever else the machine does, this times them side by side. Pipelines are built first."""
    from audioguide.pipeline import Pipeline

    pool = rows if task == "sound" else [r for split in rows.values() for r in split[::10]]  # speech: rows by split
    texts = [r.caption if task == "sound" else r.text for r in pool[::max(1, len(pool) // n)][:n]]
    pipes = {}
    for label, _, rec in methods:
        try:
            pipes[label] = Pipeline.from_recipe(rec)
            pipes[label](texts[:1], seed=0)  # warm-up
        except Exception as e:  # a refused method has no speed
            print(f"  speed: {label} skipped ({str(e).splitlines()[0]})", file=sys.stderr)
    rtfs: dict[str, list[float]] = {k: [] for k in pipes}
    for _ in range(rounds):
        for label, pipe in pipes.items():
            t0 = time.perf_counter()
            audio = pipe(texts, seed=0)
            secs = sum(len(a) for a in audio) / audio.sample_rate
            rtfs[label].append((time.perf_counter() - t0) / secs)
    return {k: float(np.median(v)) for k, v in rtfs.items()}


def write_report(task, methods, results, args) -> str:
    rng_seed = 0
    base = results["default"]
    beside = "" if args.speed_rounds else " beside other work"  # timed rounds are described below the header
    lines = [f"# Every guidance method on the shipped `{task}` recipe", ""]
    if task == "speech":
        lines += [f"Recipe `speech` (shipped weights, 2 mean-flow steps). {len(base['items'])} sentences per method "
                  f"(up to {args.per_voice} held-out + {args.per_voice} semantically unpredictable per voice, {args.voices} voices), "
                  "the same sentences and seeds for every method; Whisper base judge (WER %, corpus-level after its English "
                  "normaliser), speaker accuracy by the real-audio speaker judge (%), NFE = network rows per clip summed over "
                  f"the steps, RTF = synthesis seconds / audio seconds on {args.threads} thread(s){beside} (use ratios, not absolutes). "
                  "Brackets: 95 % bootstrap intervals (1000 resamples of sentences); Δ: paired difference to the default "
                  "(percentage points), * where its interval excludes 0.", ""]
        splits = sorted({it["split"] for it in base["items"]})
        head = ["method", "what changes"] + [f"WER {s}" for s in splits] + [f"Δ WER {s}" for s in splits] + ["speaker acc", "Δ speaker", "NFE", "RTF"]
    else:
        lines += [f"Recipe `sound` (shipped weights). {len(base['items'])} held-out captions per method (up to {args.per_class} per class), "
                  "the same captions and seeds for every method; adherence = the real-audio sound judge names the asked class (%), "
                  "FD = Fréchet distance of the judge's embeddings to the real held-out clips (lower is better), NFE = network rows "
                  f"per clip summed over the steps, RTF on {args.threads} thread(s){beside}. Brackets: 95 % bootstrap intervals "
                  "(1000 resamples of captions); Δ: paired difference to the default (points), * where its interval excludes 0.", ""]
        head = ["method", "what changes", "adherence", "Δ adherence", "FD", "NFE", "RTF"]
    if args.speed_rounds:
        lines += [f"RTF here: the median over {args.speed_rounds} interleaved rounds (every method once per round, in turn) of "
                  f"the same {args.speed_items} {'texts' if task == 'speech' else 'captions'}, seed 0, decoder included, "
                  f"{args.threads} thread(s); NFE is the exact cost.", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, what, _ in methods:
        r = results.get(label)
        if r is None:
            continue
        if "refused" in r:
            lines.append(f"| {label} | {what} | refused: {r['refused']} |" + " |" * (len(head) - 3))
            continue
        rng = np.random.default_rng(rng_seed)
        rtf = r.get("rtf_median", sum(i["synth"] for i in r["items"]) / sum(i["seconds"] for i in r["items"]))
        ids = [i["id"] for i in r["items"]]
        assert ids == [i["id"] for i in base["items"]], "methods ran on different rows"
        row = [label, what]
        if task == "speech":
            wers, dwers = [], []
            for s in splits:
                sel = [k for k, i in enumerate(r["items"]) if i["split"] == s]
                num = np.array([r["items"][k]["errors"] for k in sel], float)
                den = np.array([r["items"][k]["words"] for k in sel], float)
                v, lo, hi, idx = ratio_ci(num, den, rng)
                wers.append(cell(v, lo, hi))
                bn = np.array([base["items"][k]["errors"] for k in sel], float)
                bd = np.array([base["items"][k]["words"] for k in sel], float)
                dwers.append("-" if label == "default" else dcell(*paired_ci(bn, bd, num, den, idx)))
            hits = np.array([i["hit"] for i in r["items"]], float)
            bh = np.array([i["hit"] for i in base["items"]], float)
            ones = np.ones_like(hits)
            v, lo, hi, idx = ratio_ci(hits, ones, rng)
            row += wers + dwers + [cell(v, lo, hi), "-" if label == "default" else dcell(*paired_ci(bh, ones, hits, ones, idx))]
        else:
            hits = np.array([i["hit"] for i in r["items"]], float)
            bh = np.array([i["hit"] for i in base["items"]], float)
            ones = np.ones_like(hits)
            v, lo, hi, idx = ratio_ci(hits, ones, rng)
            row += [cell(v, lo, hi), "-" if label == "default" else dcell(*paired_ci(bh, ones, hits, ones, idx)),
                    f"{r['fd']:.2f}" if r["fd"] is not None else "-"]
        row += [f"{r['nfe']:.1f}", f"{rtf:.3f}"]
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"Command: `python benchmarks/guidance_methods.py {shlex.join(sys.argv[1:])}`", ""]
    return "\n".join(lines)


def cached(cache: Path, label: str) -> Path:
    """A method's result file in the cache."""
    return cache / (label.replace(" ", "_").replace("/", "-") + ".json")


def save(path: Path, result: dict) -> None:
    """Write a method's result atomically (an interrupted run leaves the old file or none)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("task", choices=("speech", "sound"))
    ap.add_argument("--data", action="append", required=True, help="manifest(s): held_out.jsonl, sus.jsonl (speech) or held_out.jsonl (sound)")
    ap.add_argument("--classifier", required=True, help="speakers.safetensors / sounds.safetensors from `audioguide eval speakers|sounds`")
    ap.add_argument("--per-voice", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=5)
    ap.add_argument("--judge", default="base")
    ap.add_argument("--only", action="append", help="run only these method labels (repeatable)")
    ap.add_argument("--whole-student", help="a student distilled whole (every weight), not shipped: its rows too")
    ap.add_argument("--adapter-student", help="an adapter-only student's guidance file (ship_weights.py --guidance-only): its row too")
    ap.add_argument("--cache", default="work/guidance_methods", help="per-method results, to resume")
    ap.add_argument("--report", help="write the Markdown table here")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--speed-rounds", type=int, default=0,
                    help="re-time every method over this many interleaved rounds; RTF = the median")
    ap.add_argument("--speed-items", type=int, default=4, help="texts / captions per method and round")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from audioguide.recipes import RecipeError, load_recipe

    recipe = load_recipe(args.task)
    methods = [(label, what, f(recipe)) for label, what, f in
               (speech_methods() if args.task == "speech" else sound_methods())]
    methods += [(label, what, make()) for label, what, make in extra_recipes(args.task, args.whole_student, args.adapter_student)]
    if args.task == "speech":
        from audioguide.evaluation.speaker import SpeakerClassifier
        from audioguide.evaluation.tts import read_splits

        clf = SpeakerClassifier.load(args.classifier)
        rows = read_splits(args.data)
        args.voices = len({r.speaker for split in rows.values() for r in split})  # every voice gets its rows
    else:
        from audioguide.evaluation.sound import load_sound_classifier
        from audioguide.manifest import read_manifest

        clf = load_sound_classifier(args.classifier)
        rows = [r for p in args.data for r in read_manifest(p)]
    cache = Path(args.cache) / args.task
    cache.mkdir(parents=True, exist_ok=True)
    results = {}
    for label, what, rec in methods:
        path = cached(cache, label)
        if path.exists():
            results[label] = json.loads(path.read_text())
            continue
        if args.only and label not in args.only:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {label} ...", file=sys.stderr, flush=True)
        try:
            from audioguide.recipes import check_guidance

            check_guidance(rec, rec.guidance, "guidance")
            out = run_method(args.task, label, rec, args, rows, clf)
        except (RecipeError, ValueError) as e:
            out = {"refused": str(e).splitlines()[0]}
        save(path, out)
        results[label] = out
        print(f"[{time.strftime('%H:%M:%S')}] {label} done", file=sys.stderr, flush=True)
    if args.speed_rounds:
        ran = [(label, what, rec) for label, what, rec in methods if label in results and "refused" not in results[label]]
        speed = measure_speed(args.task, ran, rows, args.speed_rounds, args.speed_items)
        for label, rtf in speed.items():
            results[label]["rtf_median"] = rtf
            save(cached(cache, label), results[label])
    if "default" not in results or "refused" in results["default"]:
        sys.exit("error: the default did not run")
    table = write_report(args.task, methods, results, args)
    print(table)
    if args.report:
        Path(args.report).write_text(table)


if __name__ == "__main__":
    main()
