"""The ``audioguide`` command line (Typer). Thin: every command calls the Python API.

Errors caused by input (recipe, text, options, files) print one line and exit with code 2;
heavy modules are imported inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="audioguide",
    help="Guidance-aware text-to-speech and text-to-audio.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

DEFAULT_RECIPE = {"tts": "random-tts", "t2a": "random-t2a"}

RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", "-r", help="Built-in recipe name or path to a recipe .toml.")]
SeedOpt = Annotated[int, typer.Option("--seed", "-s", min=0, help="Random seed; the same seed gives the same audio.")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, help="Sampler steps (default: the recipe's).")]
CfgOpt = Annotated[Optional[float], typer.Option("--cfg", help="Guidance scale for every condition (1 = no guidance).")]
ScaleOpt = Annotated[
    Optional[list[str]],
    typer.Option("--scale", help="Per-condition guidance scale NAME=W, e.g. --scale text=3 (repeatable)."),
]
RescaleOpt = Annotated[Optional[float], typer.Option("--rescale", help="CFG rescale phi in [0, 1] (Lin et al. 2023).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: all cores).")]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="Checkpoint (.safetensors, directory or Hub id) to use instead of the recipe's.")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@contextmanager
def _user_errors():
    """Turn input errors into one line on stderr and exit code 2 (130 on Ctrl-C)."""
    from audioguide.core import AudioguideError

    try:
        yield
    except AudioguideError as e:
        _fail(str(e))
    except KeyboardInterrupt:
        _fail("interrupted", 130)


def _parse_scales(items: list[str] | None) -> dict[str, float]:
    from audioguide.core import AudioguideError

    scales = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            scales[name.strip()] = float(value)
        except ValueError:
            raise AudioguideError(f"--scale expects NAME=NUMBER, got {item!r}") from None
    return scales


def _load(task: str, recipe: str | None, weights: str | None, threads: int | None):
    import torch

    from audioguide.core import AudioguideError
    from audioguide.pipeline import Pipeline

    if threads:
        torch.set_num_threads(threads)
    pipe = Pipeline.from_recipe(recipe or DEFAULT_RECIPE[task], weights=weights)
    if pipe.task != task:
        raise AudioguideError(f"recipe {pipe.recipe.name!r} is a {pipe.task} recipe; use `audioguide {pipe.task}`")
    return pipe


def _validate_and_warn(pipe, texts, steps, cfg, scales, rescale) -> None:
    """Check the options before any work, then say so if the weights are random."""
    pipe.policy(scales=scales, cfg=cfg, rescale=rescale)
    pipe.sampler_config(steps)
    if pipe.recipe.random_weights:
        typer.secho(
            f"warning: recipe {pipe.recipe.name!r} has RANDOM weights (a test recipe): the output is noise, "
            "not speech or sound. Trained default models are not shipped yet.",
            fg=typer.colors.YELLOW,
            err=True,
        )


def _check_output(output: Path, force: bool) -> None:
    from audioguide.core import AudioguideError

    if output.suffix.lower() != ".wav":
        raise AudioguideError(f"output must end in .wav, got {output}")
    if output.is_dir():
        raise AudioguideError(f"output {output} is a directory")
    if output.exists() and not force:
        raise AudioguideError(f"{output} exists; pass --force to overwrite")


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty(),
    )


def _generate(task, text, output, recipe, seed, steps, cfg, scale, rescale, seconds, threads, weights, force, inputs=None):
    from audioguide.audio import write_wav

    with _user_errors():
        _check_output(output, force)
        pipe = _load(task, recipe, weights, threads)
        scales = _parse_scales(scale)
        seconds = pipe.seconds_for(text, seconds)
        inputs = {k: v for k, v in (inputs or {}).items() if v is not None}
        pipe.check_texts([text], inputs)
        _validate_and_warn(pipe, [text], steps, cfg, scales, rescale)
        with _progress() as progress:
            bar = progress.add_task("sampling", total=steps or getattr(pipe.recipe.sampler.config, "steps", None))
            audio = pipe(
                [text], seed=seed, steps=steps, cfg=cfg, scales=scales, rescale=rescale,
                seconds=seconds, inputs=inputs, callback=lambda i, total: progress.update(bar, completed=i, total=total),
            )
        write_wav(output, audio[0], audio.sample_rate)
        typer.echo(f"wrote {output} ({audio.seconds():.2f} s, {audio.sample_rate} Hz)", err=True)


ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output file.")]


@app.command()
def tts(
    text: Annotated[str, typer.Argument(help="The text to speak.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .wav path.")] = Path("out.wav"),
    recipe: RecipeOpt = None,
    seed: SeedOpt = 0,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    scale: ScaleOpt = None,
    rescale: RescaleOpt = None,
    threads: ThreadsOpt = None,
    weights: WeightsOpt = None,
    force: ForceOpt = False,
    voice: Annotated[Optional[str], typer.Option("--voice", help="Named voice, for recipes with a speaker condition.")] = None,
    describe: Annotated[
        Optional[str], typer.Option("--describe", help="Free-text voice description, for recipes with a style condition.")
    ] = None,
) -> None:
    """Text to speech."""
    _generate("tts", text, output, recipe, seed, steps, cfg, scale, rescale, None, threads, weights, force,
              {"speaker": voice, "style": describe})


@app.command()
def t2a(
    prompt: Annotated[str, typer.Argument(help="What the sound should be, e.g. 'a dog barking'.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output .wav path.")] = Path("out.wav"),
    seconds: Annotated[Optional[float], typer.Option("--seconds", help="Duration in seconds (default: the recipe's).")] = None,
    recipe: RecipeOpt = None,
    seed: SeedOpt = 0,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    scale: ScaleOpt = None,
    rescale: RescaleOpt = None,
    threads: ThreadsOpt = None,
    weights: WeightsOpt = None,
    force: ForceOpt = False,
) -> None:
    """Text to audio (sound effects, music)."""
    _generate("t2a", prompt, output, recipe, seed, steps, cfg, scale, rescale, seconds, threads, weights, force)


@app.command()
def render(
    manifest: Annotated[Path, typer.Argument(help="JSONL manifest: one object per line with 'text' (tts) or 'caption' (t2a), optional 'id', 'seed', 'duration'.")],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Directory for <id>.wav files.")] = Path("rendered"),
    task: Annotated[str, typer.Option("--task", help="tts or t2a (default: the recipe's, else inferred from the manifest).")] = "",
    recipe: RecipeOpt = None,
    seed: SeedOpt = 0,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    scale: ScaleOpt = None,
    rescale: RescaleOpt = None,
    threads: ThreadsOpt = None,
    weights: WeightsOpt = None,
) -> None:
    """Render a whole manifest to WAVs; rerun to resume (finished files are skipped)."""
    from audioguide.core import AudioguideError
    from audioguide.manifest import read_manifest
    from audioguide.recipes import load_recipe
    from audioguide.render import check_rows
    from audioguide.render import render as render_rows

    with _user_errors():
        rows = read_manifest(manifest)
        if task and task not in DEFAULT_RECIPE:
            raise AudioguideError(f"--task must be tts or t2a, got {task!r}")
        if not task and recipe is None:  # infer from the manifest: captions only -> sound
            task = "t2a" if all(r.caption and not r.text for r in rows) else "tts"
        chosen = recipe or DEFAULT_RECIPE[task]
        pipe = _load(task or load_recipe(chosen).task, chosen, weights, threads)
        scales = _parse_scales(scale)
        check_rows(pipe, rows)
        _validate_and_warn(pipe, [], steps, cfg, scales, rescale)
        with _progress() as progress:
            bar = progress.add_task("rendering", total=len(rows))
            report = render_rows(
                pipe, rows, out_dir, seed=seed, steps=steps, cfg=cfg, scales=scales,
                rescale=rescale, on_row=lambda row, skipped: progress.advance(bar),
            )
        typer.echo(f"wrote {report.written} file(s) to {out_dir}, skipped {report.skipped} already done", err=True)


@app.command()
def train(
    recipe: Annotated[str, typer.Argument(help="Recipe name or path; its [train] table says what and how to train.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="JSONL manifest with 'audio' paths and the recipe's conditions.")],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Run directory: state, exported weights, samples.")] = Path("runs/train"),
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Stop at this total step (default: the recipe's; the schedule follows the recipe).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    threads: ThreadsOpt = None,
) -> None:
    """Train a recipe's model (or its autoencoder); rerun the same command to resume.

    Multi-GPU / multi-node: torchrun --nproc_per_node N -m audioguide.cli train RECIPE --data M.
    """
    import torch

    from audioguide.recipes import load_recipe
    from audioguide.training.trainer import train as run_training

    with _user_errors():
        if threads:
            torch.set_num_threads(threads)
        r = load_recipe(recipe)
        with _progress() as progress:
            bar = progress.add_task("training", total=steps or r.train.steps)

            def log(step, logs):
                progress.update(bar, completed=step, description=f"training loss {logs['loss']:.4f}")
                if not sys.stderr.isatty():
                    typer.echo(f"step {step} " + " ".join(f"{k}={v:.4g}" for k, v in logs.items()), err=True)

            result = run_training(r, data, out_dir, steps=steps, device=device, log=log)
        typer.echo(f"trained to step {result.step}; weights: {result.export}", err=True)


data_app = typer.Typer(help="Build training corpora offline.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("speech")
def data_speech(
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Corpus directory.")] = Path("corpus/speech"),
    sentences: Annotated[int, typer.Option("--sentences", min=1, help="Training sentences per voice.")] = 2000,
    held_out: Annotated[int, typer.Option("--held-out", min=1, help="Held-out and SUS sentences per voice.")] = 40,
    teacher: Annotated[
        Optional[list[str]],
        typer.Option("--teacher", help="Teacher voice (repeatable): hibari-heart, piper-joe, flite-{slt,rms,awb,kal16}, "
                     "kokoro-{alpha,gongitsune,nezumi,tebukuro,kumo,alpha+kumo,nezumi+kumo}."),
    ] = None,
    seed: SeedOpt = 0,
) -> None:
    """Synthesise a speech corpus (WAVs + JSONL manifests) from offline teacher voices; resumable."""
    from audioguide.corpus.speech import build_speech_corpus

    with _user_errors(), _progress() as progress:
        bar = progress.add_task("synthesising", total=None)
        paths = build_speech_corpus(
            out_dir, sentences, seed, tuple(teacher or ["hibari-heart"]), held_out,
            on_item=lambda i, n: progress.update(bar, completed=i, total=n),
        )
    for split, path in paths.items():
        typer.echo(f"{split}: {path}", err=True)


eval_app = typer.Typer(help="Measure quality with objective judges.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("codec")
def eval_codec(
    recipe: Annotated[str, typer.Argument(help="Recipe whose [representation] to evaluate.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Manifest of real audio with 'text' (and 'speaker').")],
    weights: Annotated[Optional[str], typer.Option("--weights", help="Representation weights (default: the recipe's).")] = None,
    tokens: Annotated[bool, typer.Option("--tokens/--latents", help="Evaluate the discrete token path.")] = False,
    per_voice: Annotated[int, typer.Option("--per-voice", min=1, help="At most this many rows per speaker.")] = 100000,
    judge: Annotated[str, typer.Option("--judge", help="Whisper judge: tiny.en or a CTranslate2 model directory.")] = "tiny.en",
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the table (Markdown) here.")] = None,
    threads: ThreadsOpt = None,
) -> None:
    """Resynthesis quality of a representation: mel / STFT distance, WER through Whisper, speed."""
    import dataclasses
    from collections import Counter

    import torch

    from audioguide.evaluation.codec import evaluate_resynthesis, markdown
    from audioguide.manifest import read_manifest
    from audioguide.pipeline import build_components
    from audioguide.recipes import load_recipe

    with _user_errors():
        if threads:
            torch.set_num_threads(threads)
        r = load_recipe(recipe)
        if weights:
            r = dataclasses.replace(r, representation=dataclasses.replace(r.representation, weights=weights))
        representation, _ = build_components(dataclasses.replace(r, model=None), require_weights=False)
        representation.eval()
        rows, seen = [], Counter()
        for row in read_manifest(data):
            seen[row.speaker] += 1
            if seen[row.speaker] <= per_voice:
                rows.append(row)
        with _progress() as progress:
            bar = progress.add_task("evaluating", total=len(rows))
            reports = evaluate_resynthesis(representation, rows, tokens, judge, lambda i, n: progress.update(bar, completed=i))
        table = markdown(reports, f"{r.name} ({'tokens' if tokens else 'latents'}) on {data}")
        typer.echo(table)
        if report:
            report.parent.mkdir(parents=True, exist_ok=True)
            report.write_text(table)


@app.command("recipes")
def list_recipes() -> None:
    """List the built-in recipes, one line each."""
    from audioguide.recipes import builtin_recipes

    with _user_errors():
        for r in builtin_recipes():
            flag = " [train only]" if r.model is None else " [random weights]" if r.random_weights else ""
            typer.echo(f"{r.name:24s} {r.task:4s} {r.description}{flag}")


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


if __name__ == "__main__":
    main()
