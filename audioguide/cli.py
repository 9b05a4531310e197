"""The ``audioguide`` command line (Typer). Thin: every command calls the Python API.

Errors caused by input (recipe, text, options, files) print one line and exit with code 2;
heavy modules are imported inside the commands so that ``--help`` stays fast.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import contextmanager
from dataclasses import dataclass
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

DEFAULT_RECIPE = {"tts": "speech", "t2a": "sound"}

RecipeOpt = Annotated[Optional[str], typer.Option("--recipe", "-r", help="Built-in recipe name or path to a recipe .toml.")]
SeedOpt = Annotated[int, typer.Option("--seed", "-s", min=0, max=2**64 - 1, help="Random seed; the same seed gives the same audio.")]
StepsOpt = Annotated[Optional[int], typer.Option("--steps", min=1, help="Sampler steps (default: the recipe's).")]
CandidatesOpt = Annotated[
    Optional[int],
    typer.Option("--candidates", help="Samples drawn per sentence; the recipe's verifier keeps the clearest (default: the recipe's; 1 = plain sampling)."),
]
CfgOpt = Annotated[Optional[float], typer.Option("--cfg", help="Guidance scale for every condition (1 = no guidance).")]
ScaleOpt = Annotated[
    Optional[list[str]],
    typer.Option("--scale", help="Per-condition guidance scale NAME=W, e.g. --scale text=3 (repeatable)."),
]
RescaleOpt = Annotated[Optional[float], typer.Option("--rescale", help="CFG rescale phi in [0, 1] (Lin et al. 2023).")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads for torch (default: all cores).")]
WeightsOpt = Annotated[Optional[str], typer.Option("--weights", help="Checkpoint (.safetensors, directory, or hf://owner/name on the Hub) to use instead of the recipe's.")]

# tts, t2a and serve: what an interactive call needs
MAX_TEXT_CHARS = 200_000  # a long chapter; each sentence is checked and drawn on its own
LiveThreadsOpt = Annotated[
    Optional[int],
    typer.Option("--threads", min=1, max=1024, help="CPU threads for torch (default: 1, which holds up when other processes keep cores busy; README 'Threads')."),
]
OutputOpt = Annotated[
    str, typer.Option("--output", "-o", help="Output file; its suffix picks the format: .wav .flac .ogg .opus .mp3. '-' writes to stdout (see --format).")
]
FormatOpt = Annotated[Optional[str], typer.Option("--format", help="Format for -o -: wav (default), flac, ogg, opus, mp3 or pcm (16-bit little-endian, no header).")]
SampleRateOpt = Annotated[Optional[int], typer.Option("--sample-rate", help="Resample the output to this rate in Hz (soxr; default: the recipe's).")]
SampleFormatOpt = Annotated[Optional[str], typer.Option("--sample-format", help="16, 24 or float for WAV; 16 or 24 for FLAC (default 16).")]
LoudnessOpt = Annotated[
    str,
    typer.Option("--loudness", help="Integrated loudness in LUFS (ITU-R BS.1770), or 'off' for the model's own level; true peaks stay under -1 dBTP either way."),
]
TextFileOpt = Annotated[Optional[Path], typer.Option("--text-file", help="Read the text from this UTF-8 file instead.")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _interruption(e: KeyboardInterrupt) -> tuple[str, int]:
    """The one line and exit code (128 + signal number) of an interrupted command."""
    from audioguide.core import Terminated

    if isinstance(e, Terminated):
        return "terminated (SIGTERM)", 128 + signal.SIGTERM
    return "interrupted", 128 + signal.SIGINT


@contextmanager
def _user_errors():
    """Turn input errors into one line on stderr and exit code 2 (130 on Ctrl-C, 143 on SIGTERM)."""
    from audioguide.core import AudioguideError

    try:
        yield
    except AudioguideError as e:
        _fail(str(e))
    except KeyboardInterrupt as e:
        _fail(*_interruption(e))


def _pairs(items: list[str] | None, option: str = "--scale") -> dict[str, float]:
    """``NAME=NUMBER`` options as a mapping; a one-line error names the bad item."""
    from audioguide.core import AudioguideError

    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise AudioguideError(f"{option} expects NAME=NUMBER, got {item!r}") from None
    return out


def _counts(items: list[str] | None, option: str) -> dict[str, int]:
    """``NAME=N`` pairs with whole numbers ``N >= 0``."""
    from audioguide.core import AudioguideError

    out = {}
    for name, v in _pairs(items, option).items():
        if not (0 <= v < float("inf") and v == int(v)):
            raise AudioguideError(f"{option} expects NAME=N with a whole number N >= 0, got {name}={v:g}")
        out[name] = int(v)
    return out


def _load(task: str, recipe: str | None, weights: str | None, threads: int | None, render: bool = False):
    import torch

    from audioguide.core import AudioguideError
    from audioguide.pipeline import Pipeline

    if threads:
        torch.set_num_threads(threads)
    pipe = Pipeline.from_recipe(recipe or DEFAULT_RECIPE[task], weights=weights)
    if pipe.task != task:
        how = f"--task {pipe.task}" if render else f"`audioguide {pipe.task}`"
        raise AudioguideError(f"recipe {pipe.recipe.name!r} is a {pipe.task} recipe; use {how}")
    return pipe


def _warn_random(pipe) -> None:
    """Say so if the recipe's weights are random."""
    if pipe.recipe.random_weights:
        typer.secho(
            f"warning: recipe {pipe.recipe.name!r} has RANDOM weights (a test recipe): the output is noise, "
            "not speech or sound. The trained defaults are the recipes `speech` (tts) and `sound` (t2a).",
            fg=typer.colors.YELLOW,
            err=True,
        )


def _read_text(text: str | None, text_file: Path | None, name: str = "text") -> str:
    """The text of a call: the argument, stdin for ``-``, or ``--text-file`` (UTF-8); one line on error."""
    from audioguide.core import AudioguideError

    if text is not None and text_file is not None:
        raise AudioguideError("give the text or --text-file, not both")
    try:
        if text_file is not None:
            text = text_file.read_bytes().decode("utf-8")
        elif text == "-":
            text = sys.stdin.buffer.read().decode("utf-8")
    except OSError as e:
        raise AudioguideError(f"cannot read {text_file or 'stdin'}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise AudioguideError(f"{text_file or 'stdin'} is not UTF-8 text (byte {e.start})") from None
    if text is None:
        raise AudioguideError(f"Missing argument '{name}': give it, or - to read it from stdin, or --text-file FILE")
    if len(text) > MAX_TEXT_CHARS:
        raise AudioguideError(f"text is {len(text)} characters, over {MAX_TEXT_CHARS}; split it into several calls")
    return text


def _target(output: str, fmt: str | None, force: bool) -> tuple[Path | None, str]:
    """Where and in what format to write: ``(path, format)``, or ``(None, format)`` for stdout
    (``-o -``, ``--format``, default wav); the path is checked as :func:`_check_output` does."""
    from audioguide.audio import FORMATS, format_of
    from audioguide.core import AudioguideError

    if fmt is not None and fmt not in FORMATS:
        raise AudioguideError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if output == "-":
        if sys.stdout.isatty():
            raise AudioguideError("refusing to write audio to a terminal: redirect stdout, or pass -o FILE")
        return None, fmt or "wav"
    path = Path(output)
    suffix = format_of(path)
    if fmt is not None and fmt != suffix:
        raise AudioguideError(f"--format {fmt} disagrees with {path.name}; the file's suffix sets its format")
    _check_output(path, force)
    return path, suffix


def _loudness(value: str) -> float | None:
    """``--loudness``: LUFS in [-60, -5], or ``off``."""
    from audioguide.core import AudioguideError

    if value.strip().lower() in ("off", "none"):
        return None
    try:
        lufs = float(value)
    except ValueError:
        lufs = float("nan")
    if not -60.0 <= lufs <= -5.0:
        raise AudioguideError(f"--loudness must be LUFS in [-60, -5] or 'off', got {value!r}")
    return lufs


def _write_stdout(data: bytes) -> None:
    """Audio bytes to stdout; a closed pipe or a full disk is one line, not a traceback."""
    from audioguide.core import AudioguideError, os_reason

    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except OSError as e:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second failure at exit
        raise AudioguideError(f"cannot write to stdout: {os_reason(e)}") from None


def _check_output(output: Path, force: bool) -> None:
    """An output file that may be written: not a directory, not existing unless ``force``, under a
    directory (or directories that will be created)."""
    from audioguide.core import AudioguideError

    try:
        if output.is_dir():
            raise AudioguideError(f"output {output} is a directory")
        if output.exists() and not force:
            raise AudioguideError(f"{output} exists; pass --force to overwrite")
        parent = output.parent
        while not parent.exists() and parent != parent.parent:  # the directories the write will create
            parent = parent.parent
        if not parent.is_dir():
            raise AudioguideError(f"cannot write {output}: {parent} is not a directory")
    except OSError as e:  # e.g. a name over the file system's length limit
        raise AudioguideError(f"cannot write {output}: {e.strerror}") from None


def _progress():
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty(),
    )


@dataclass(frozen=True)
class _Output:
    """tts / t2a output options: where, format, rate, sample format, loudness."""

    output: str
    fmt: str | None = None
    sample_rate: int | None = None
    sample_format: str | None = None
    loudness: str = "-16"
    force: bool = False


def _generate(task, text, output: _Output, recipe, seed, steps, cfg, scale, rescale, seconds, threads, weights, inputs=None,
              negative=None, candidates=None, text_file=None, speed=None, parts=None, part_weight=None):
    """Check everything, load, prepare, draw; then level, encode and write (a file, atomically, or stdout)."""
    from audioguide.audio import encode_audio, master, output_rate, subtype_of, write_bytes
    from audioguide.core import AudioguideError, set_threads

    with _user_errors():
        text = _read_text(text, text_file, "text" if task == "tts" else "prompt")
        target, fmt = _target(output.output, output.fmt, output.force)
        subtype_of(fmt, output.sample_format)
        lufs = _loudness(output.loudness)
        if output.sample_rate is not None:
            output_rate(fmt, 0, output.sample_rate)  # checked before any work
        if part_weight is not None and not parts:
            raise AudioguideError("--and-weight weighs the --and parts: give at least one --and")
        set_threads(threads)
        pipe = _load(task, recipe, weights, None)
        rate = output_rate(fmt, pipe.sample_rate, output.sample_rate)
        inputs = {k: v for k, v in (inputs or {}).items() if v is not None}
        plan = pipe.prepare([text], seed=seed, steps=steps, cfg=cfg, scales=_pairs(scale), rescale=rescale,
                            seconds=seconds, inputs=inputs, negative=negative, candidates=candidates, speed=speed,
                            parts=parts or None, part_weights=None if part_weight is None else [1.0] + [part_weight] * len(parts or ()))
        _warn_random(pipe)
        with _progress() as progress:
            bar = progress.add_task("sampling", total=pipe.steps_for(steps))  # a codec LM's follows the length
            audio = pipe.generate(plan, callback=lambda i, total: progress.update(bar, completed=i, total=total))
        wav, sr = master(audio[0], audio.sample_rate, target_lufs=lufs, rate=rate)
        data = encode_audio(wav, sr, fmt, output.sample_format)
        if target is None:
            _write_stdout(data)
        else:
            write_bytes(target, data)
        typer.echo(f"wrote {target or 'stdout'} ({len(wav) / sr:.2f} s, {sr} Hz, {fmt})", err=True)


ForceOpt = Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing output file.")]


@app.command()
def tts(
    text: Annotated[Optional[str], typer.Argument(help="The text to speak; - reads it from stdin.")] = None,
    output: OutputOpt = "out.wav",
    recipe: RecipeOpt = None,
    seed: SeedOpt = 0,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    scale: ScaleOpt = None,
    rescale: RescaleOpt = None,
    threads: LiveThreadsOpt = None,
    weights: WeightsOpt = None,
    force: ForceOpt = False,
    voice: Annotated[Optional[str], typer.Option("--voice", help="Named voice, for recipes with a speaker condition.")] = None,
    describe: Annotated[
        Optional[str], typer.Option("--describe", help="Free-text voice description, for recipes with a style condition.")
    ] = None,
    candidates: CandidatesOpt = None,
    speed: Annotated[Optional[float], typer.Option("--speed", min=0.25, max=4.0, help="Speaking rate, 0.25-4 (2 = twice as fast; default: the voice's own).")] = None,
    text_file: TextFileOpt = None,
    fmt: FormatOpt = None,
    sample_rate: SampleRateOpt = None,
    sample_format: SampleFormatOpt = None,
    loudness: LoudnessOpt = "-16",
) -> None:
    """Text to speech."""
    _generate("tts", text, _Output(output, fmt, sample_rate, sample_format, loudness, force), recipe, seed, steps, cfg,
              scale, rescale, None, threads, weights, {"speaker": voice, "style": describe}, candidates=candidates,
              text_file=text_file, speed=speed)


@app.command()
def t2a(
    prompt: Annotated[Optional[str], typer.Argument(help="What the sound should be, e.g. 'a dog barking'; - reads stdin.")] = None,
    output: OutputOpt = "out.wav",
    seconds: Annotated[Optional[float], typer.Option("--seconds", help="Duration in seconds (default: the recipe's).")] = None,
    recipe: RecipeOpt = None,
    seed: SeedOpt = 0,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    scale: ScaleOpt = None,
    rescale: RescaleOpt = None,
    threads: LiveThreadsOpt = None,
    weights: WeightsOpt = None,
    force: ForceOpt = False,
    negative: Annotated[
        Optional[str], typer.Option("--negative", help="Negative prompt: what the sound should not be, e.g. 'music'.")
    ] = None,
    also: Annotated[
        Optional[list[str]],
        typer.Option("--and", help="Another sound in the same clip, e.g. --and 'rain falling' (repeatable): the prompt and each "
                                   "part guided together (Composable Diffusion)."),
    ] = None,
    and_weight: Annotated[
        Optional[float], typer.Option("--and-weight", min=0.0, max=4.0, help="Weight of every --and part against the prompt's 1 "
                                                                           "(default 1; lower: quieter, e.g. a background).")
    ] = None,
    text_file: TextFileOpt = None,
    fmt: FormatOpt = None,
    sample_rate: SampleRateOpt = None,
    sample_format: SampleFormatOpt = None,
    loudness: LoudnessOpt = "-16",
) -> None:
    """Text to audio (sound effects, music)."""
    _generate("t2a", prompt, _Output(output, fmt, sample_rate, sample_format, loudness, force), recipe, seed, steps, cfg,
              scale, rescale, seconds, threads, weights, negative=negative, text_file=text_file, parts=also, part_weight=and_weight)


@app.command()
def serve(
    recipe: Annotated[Optional[list[str]], typer.Option("--recipe", "-r", help="Recipe to load and serve (repeatable; default: speech and sound).")] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="TCP port (0: any free port, printed at start).")] = 8000,
    threads: LiveThreadsOpt = None,
    max_chars: Annotated[int, typer.Option("--max-chars", min=1, max=MAX_TEXT_CHARS, help="Longest input a request may send, in characters.")] = 4096,
    max_queue: Annotated[int, typer.Option("--max-queue", min=1, max=1024, help="Requests taken at once; more get 503 (generation runs one sentence at a time).")] = 8,
    max_body: Annotated[int, typer.Option("--max-body", min=1024, max=16 * 2**20, help="Largest request body in bytes.")] = 64 * 1024,
    loudness: LoudnessOpt = "-16",
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level: critical, error, warning, info, debug.")] = "warning",
) -> None:
    """HTTP server: OpenAI-compatible POST /v1/audio/speech and POST /v1/audio/sound, streamed sentence by sentence."""
    from audioguide.core import AudioguideError, set_threads
    from audioguide.pipeline import Pipeline

    with _user_errors():
        try:
            from audioguide import serve as serving
        except ImportError as e:
            raise AudioguideError(f"audioguide serve needs the serve extra (no {e.name}): pip install 'audioguide[serve]'") from None
        limits = serving.Limits(max_chars=max_chars, max_body=max_body, max_queue=max_queue, target_lufs=_loudness(loudness))
        if log_level not in ("critical", "error", "warning", "info", "debug"):
            raise AudioguideError(f"--log-level must be critical, error, warning, info or debug, got {log_level!r}")
        n_threads = set_threads(threads)
        pipelines = {}
        for name in recipe or ["speech", "sound"]:
            pipe = Pipeline.from_recipe(name)
            if pipe.recipe.name in pipelines:
                raise AudioguideError(f"recipe {pipe.recipe.name!r} is given twice")
            _warn_random(pipe)
            pipelines[pipe.recipe.name] = pipe
        sock = serving.listen(host, port)
        stops = []
        for sig in (signal.SIGINT, signal.SIGTERM):  # uvicorn stops gracefully, then raises the signal again: here
            signal.signal(sig, lambda signum, frame: stops.append(signum))
        typer.echo(f"audioguide serve: listening on http://{host}:{sock.getsockname()[1]} "
                   f"(models: {', '.join(pipelines)}; {n_threads} thread(s))", err=True)
        serving.run(serving.Server(pipelines, limits), sock, log_level)
        how = f" by {signal.Signals(stops[0]).name}" if stops else ""
        typer.echo(f"audioguide serve: stopped{how}", err=True)


@app.command()
def render(
    manifest: Annotated[Path, typer.Argument(help="JSONL manifest: one object per line with 'text' (tts) or 'caption' (t2a), optional 'id', 'seed', 'duration', 'speaker', 'style'.")],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Directory for <id>.wav files and results.jsonl.")] = Path("rendered"),
    task: Annotated[str, typer.Option("--task", help="tts or t2a (default: the recipe's, else inferred from the manifest).")] = "",
    recipe: RecipeOpt = None,
    seed: SeedOpt = 0,
    steps: StepsOpt = None,
    cfg: CfgOpt = None,
    scale: ScaleOpt = None,
    rescale: RescaleOpt = None,
    threads: ThreadsOpt = None,
    weights: WeightsOpt = None,
    candidates: CandidatesOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=256, help="Pieces per forward pass (similar lengths batched together).")] = 8,
    workers: Annotated[int, typer.Option("--workers", min=1, max=256, help="Worker processes (local) or Ray actors; threads are split between them.")] = 1,
    engine: Annotated[str, typer.Option("--engine", help="local (processes on this machine; torchrun ranks shard) or ray.")] = "local",
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="Ray cluster to join (default: RAY_ADDRESS, else a local instance).")] = None,
    log_every: Annotated[float, typer.Option("--log-every", min=0.1, help="Seconds between progress lines when stderr is not a terminal.")] = 10.0,
    loudness: LoudnessOpt = "-16",
) -> None:
    """Render a whole manifest to WAVs and results.jsonl; rerun to resume (done rows are skipped)."""
    from audioguide.core import AudioguideError
    from audioguide.manifest import read_manifest
    from audioguide.recipes import load_recipe
    from audioguide.render import manifest_task
    from audioguide.render import render as render_rows
    from audioguide.render.progress import RenderProgress

    with _user_errors():
        rows = read_manifest(manifest)
        if task and task not in DEFAULT_RECIPE:
            raise AudioguideError(f"--task must be tts or t2a, got {task!r}")
        if not task:  # the recipe's task, else the manifest's
            task = load_recipe(recipe).task if recipe is not None else manifest_task(rows)
        pipe = _load(task, recipe, weights, threads, render=True)
        _warn_random(pipe)
        progress = RenderProgress(len(rows), log_every)
        try:
            with progress:
                report = render_rows(pipe, rows, out_dir, seed, batch_size=batch_size, workers=workers, engine=engine,
                                     weights=weights, on_event=progress, ray_address=ray_address,
                                     loudness=_loudness(loudness), steps=steps, cfg=cfg,
                                     scales=_pairs(scale), rescale=rescale, candidates=candidates)
        except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: what was written stays, the rest resumes
            message, code = _interruption(e)
            _fail(f"{message}: {progress.counts['done']} row(s) written; rerun the same command to resume", code)
        typer.echo(f"render: {progress.summary()}; results in {out_dir / 'results.jsonl'}", err=True)
        if report.failed:
            _fail(f"{report.failed} of {len(rows)} row(s) failed; their errors are in {out_dir / 'results.jsonl'}; "
                  "rerun to retry them", 1)


@app.command()
def train(
    recipe: Annotated[str, typer.Argument(help="Recipe name or path; its [train] table says what and how to train.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="JSONL manifest with 'audio' paths and the recipe's conditions.")],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Run directory: state, exported weights, samples.")] = Path("runs/train"),
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Stop at this total step (default: the recipe's; the schedule follows the recipe).")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, ...")] = "cpu",
    threads: ThreadsOpt = None,
    from_scratch: Annotated[bool, typer.Option("--from-scratch", help="Start from the seeded initialisation even where the recipe's weights file exists (by default a new run warm-starts from it).")] = False,
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
                if "loss" in logs:
                    progress.update(bar, completed=step, description=f"training loss {logs['loss']:.4f}")
                if not sys.stderr.isatty():
                    typer.echo(f"step {step} " + " ".join(f"{k}={v:.4g}" for k, v in logs.items()), err=True)

            result = run_training(r, data, out_dir, steps=steps, device=device, log=log, warm_start=not from_scratch)
        typer.echo(f"trained to step {result.step}; weights: {result.export}", err=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # A torchrun rank is done: every rank has passed the final barrier, so rank 0's files are
        # written. Leave without C++ static destructors, where torch's own threads sometimes abort
        # ("terminate called without an active exception", after Python has finished).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@app.command()
def voices(recipe: RecipeOpt = None) -> None:
    """List the named voices of a tts recipe (for --voice), the default marked with *."""
    from audioguide.recipes import load_recipe

    with _user_errors():
        from audioguide.core import AudioguideError

        r = load_recipe(recipe or DEFAULT_RECIPE["tts"])
        speaker = dict(r.conditioners).get("speaker")
        if speaker is None or speaker.type != "speaker-id":
            raise AudioguideError(f"recipe {r.name!r} has no named voices")
        default = dict(r.defaults).get("speaker")
        notes = speaker.config.descriptions or ("",) * len(speaker.config.voices)
        width = max(len(v) for v in speaker.config.voices)
        for name, note in zip(speaker.config.voices, notes):
            mark = "*" if name == default else " "
            typer.echo(f"{mark} {name:<{width}}  {note}".rstrip())


data_app = typer.Typer(help="Build training corpora offline.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("speech")
def data_speech(
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Corpus directory.")] = Path("corpus/speech"),
    sentences: Annotated[int, typer.Option("--sentences", min=1, help="Training sentences per voice.")] = 2000,
    held_out: Annotated[int, typer.Option("--held-out", min=1, help="Held-out and SUS sentences per voice.")] = 40,
    teacher: Annotated[
        Optional[list[str]],
        typer.Option("--teacher", help="Teacher voice (repeatable): hibari-heart, piper-joe, flite-{slt,rms,awb,kal16}, festival-ked, "
                     "kokoro-{alpha,gongitsune,nezumi,tebukuro,kumo,alpha+kumo,nezumi+kumo}."),
    ] = None,
    limit: Annotated[
        Optional[list[str]],
        typer.Option("--limit", help="NAME=N: at most N training sentences for that teacher (repeatable; slow voices)."),
    ] = None,
    speed: Annotated[float, typer.Option("--speed", help="Ask every teacher for this pace (0.5-2; 0.8 slower, 1.25 faster): the same sentences and voices at another pace, to merge with a corpus at 1.")] = 1.0,
    seed: SeedOpt = 0,
) -> None:
    """Synthesise a speech corpus (WAVs + JSONL manifests) from offline teacher voices; resumable."""
    from audioguide.corpus.speech import build_speech_corpus

    with _user_errors(), _progress() as progress:
        bar = progress.add_task("synthesising", total=None)
        paths = build_speech_corpus(
            out_dir, sentences, seed, tuple(teacher or ["hibari-heart"]), held_out,
            on_item=lambda i, n: progress.update(bar, completed=i, total=n),
            sentences_for=_counts(limit, "--limit"), speed=speed,
        )
    for split, path in paths.items():
        typer.echo(f"{split}: {path}", err=True)


@data_app.command("sound")
def data_sound(
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Corpus directory.")] = Path("corpus/sound"),
    music: Annotated[int, typer.Option("--music", min=0, help="Training music pieces (a quarter as many are held out).")] = 1200,
    speech: Annotated[Optional[Path], typer.Option("--speech", help="A speech corpus directory (train/held_out.jsonl) for speech snippets.")] = None,
    speech_clips: Annotated[int, typer.Option("--speech-clips", min=0, help="Training speech snippets.")] = 300,
    seconds: Annotated[float, typer.Option("--seconds", min=1.0, max=30.0, help="Length of a music piece.")] = 4.0,
    captions: Annotated[int, typer.Option("--captions", min=1, help="Captions per training effect file.")] = 4,
    procedural: Annotated[int, typer.Option("--procedural", min=0, help="Training clips per procedural class (rain, sirens, ...; a quarter as many held out).")] = 0,
    mixtures: Annotated[int, typer.Option("--mixtures", min=0, help="Two-source training scenes (a quarter as many held out).")] = 0,
    soundfont_effects: Annotated[int, typer.Option("--soundfont-effects", min=0, help="Training scenes per class and soundfont from the soundfonts' effect samples (bells, surf, birds, helicopter, applause).")] = 0,
    seed: SeedOpt = 0,
) -> None:
    """Build a captioned sound corpus: real effects from Debian packages, procedural everyday sounds, FluidSynth music, speech snippets, two-source scenes; resumable."""
    from audioguide.corpus.sound import build_sound_corpus

    with _user_errors(), _progress() as progress:
        bar = progress.add_task("rendering", total=None)
        paths = build_sound_corpus(
            out_dir, music, seed, speech, seconds, captions, speech_clips=speech_clips,
            on_item=lambda i, n: progress.update(bar, completed=i, total=n), procedural=procedural, mixtures=mixtures,
            soundfont_effects=soundfont_effects,
        )
    for split, path in paths.items():
        typer.echo(f"{split}: {path}", err=True)


@data_app.command("merge")
def data_merge(
    corpora: Annotated[list[Path], typer.Argument(help="Corpus directories (each with train/held_out/sus.jsonl).")],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Directory for the merged manifests.")] = Path("corpus/speech"),
    seed: SeedOpt = 0,
) -> None:
    """Merge corpus directories into one set of manifests (audio stays where it is)."""
    from audioguide.corpus.speech import merge_corpora

    with _user_errors():
        paths = merge_corpora(out_dir, corpora, seed)
    for split, path in paths.items():
        typer.echo(f"{split}: {path}", err=True)


@data_app.command("tokens")
def data_tokens(
    data: Annotated[Path, typer.Option("--data", "-d", help="Manifest of audio.")],
    out: Annotated[Path, typer.Option("--output", "-o", help="The manifest to write: the rows with their 'tokens'.")],
    recipe: Annotated[str, typer.Option("--recipe", "-r", help="Recipe whose semantic tokenizer to use.")] = "tokenizer-speech",
    threads: ThreadsOpt = None,
) -> None:
    """Add each row's semantic tokens (what an acoustic stage trains on) to a manifest."""
    import torch

    from audioguide.corpus.tokens import tokenize_manifest
    from audioguide.recipes import load_recipe

    with _user_errors(), _progress() as progress:
        if threads:
            torch.set_num_threads(threads)
        bar = progress.add_task("tokenizing", total=None)
        n = tokenize_manifest(load_recipe(recipe), data, out, on_item=lambda i, n: progress.update(bar, completed=i, total=n))
    typer.echo(f"{n} rows: {out}", err=True)


eval_app = typer.Typer(help="Measure quality with objective judges.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@eval_app.command("codec")
def eval_codec(
    recipe: Annotated[str, typer.Argument(help="Recipe whose [representation] to evaluate.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Manifest of real audio with 'text' (and 'speaker').")],
    weights: Annotated[Optional[str], typer.Option("--weights", help="Representation weights (default: the recipe's).")] = None,
    tokens: Annotated[bool, typer.Option("--tokens/--latents", help="Evaluate the discrete token path.")] = False,
    per_voice: Annotated[int, typer.Option("--per-voice", min=1, help="At most this many rows per speaker.")] = 100000,
    judge: Annotated[str, typer.Option("--judge", help="Whisper judge: tiny.en, base (Whisper base, English) or a CTranslate2 model directory.")] = "tiny.en",
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the table (Markdown) here.")] = None,
    perceptual: Annotated[bool, typer.Option("--pesq/--no-pesq", help="Wideband PESQ and STOI against the original.")] = True,
    threads: ThreadsOpt = None,
) -> None:
    """Resynthesis quality of a representation: mel / STFT distance, PESQ, STOI, WER through Whisper, speed."""
    import dataclasses

    import torch

    from audioguide.evaluation.codec import evaluate_resynthesis, markdown
    from audioguide.manifest import cap_per_voice, read_manifest
    from audioguide.components import build_components
    from audioguide.recipes import load_recipe

    with _user_errors():
        if threads:
            torch.set_num_threads(threads)
        r = load_recipe(recipe)
        if weights:
            r = dataclasses.replace(r, representation=dataclasses.replace(r.representation, weights=weights))
        representation, _ = build_components(dataclasses.replace(r, model=None), require_weights=False)
        representation.eval()
        rows = cap_per_voice(read_manifest(data), per_voice)
        with _progress() as progress:
            bar = progress.add_task("evaluating", total=len(rows))
            reports = evaluate_resynthesis(representation, rows, tokens, judge, lambda i, n: progress.update(bar, completed=i),
                                           perceptual=perceptual)
        table = markdown(reports, f"{r.name} ({'tokens' if tokens else 'latents'}) on {data}")
        typer.echo(table)
        if report:
            _write_report(report, table)


def _write_report(path: Path, text: str) -> None:
    from audioguide.core import atomic_write

    with atomic_write(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {path}", err=True)


def _judge_inputs(data: Path, held_out: Path, output: Path, threads: int | None) -> tuple[list, list]:
    """For the judge-training commands: torch's threads, the output's suffix checked, both manifests read."""
    import torch

    from audioguide.core import AudioguideError
    from audioguide.manifest import read_manifest

    if threads:
        torch.set_num_threads(threads)
    if output.suffix != ".safetensors":
        raise AudioguideError(f"output must end in .safetensors, got {output}")
    return read_manifest(data), read_manifest(held_out)


def _echo_judge(what: str, clf, overall: float, items: int, per: dict, label: str, unit: str) -> None:
    """Print a trained judge's summary and its held-out accuracy per label (voice, class)."""
    plural = "classes" if label == "class" else f"{label}s"
    typer.echo(f"{what}: {len(clf.labels)} {plural}, {clf.config['train_items']} training {unit}, "
               f"train accuracy {100 * clf.config['train_accuracy']:.1f} %")
    typer.echo(f"held-out accuracy on real audio: {100 * overall:.1f} % ({items} {unit})")
    for name, (a, n) in per.items():
        flag = "" if name in clf.labels else f"  (not a training {label})"
        typer.echo(f"  {name:24s} {100 * a:5.1f} % of {n}{flag}")


@eval_app.command("speakers")
def eval_speakers(
    data: Annotated[Path, typer.Option("--data", "-d", help="Training manifest of real recordings with 'audio' and 'speaker'.")],
    held_out: Annotated[Path, typer.Option("--held-out", help="Held-out manifest of real recordings: the classifier's accuracy on it is printed.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Classifier .safetensors to write.")] = Path("speaker-classifier.safetensors"),
    per_voice: Annotated[int, typer.Option("--per-voice", min=1, help="At most this many training recordings per voice.")] = 200,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
) -> None:
    """Train the speaker-identification judge on real recordings and report its held-out accuracy."""
    from audioguide.evaluation.speaker import held_out_accuracy, train_speaker_classifier

    with _user_errors():
        train_rows, held_rows = _judge_inputs(data, held_out, output, threads)
        with _progress() as progress:
            bar = progress.add_task("features (train)", total=None)
            clf = train_speaker_classifier(train_rows, per_voice, seed,
                                           on_item=lambda i, n: progress.update(bar, completed=i, total=n))
            bar = progress.add_task("features (held out)", total=None)
            acc = held_out_accuracy(clf, held_rows, on_item=lambda i, n: progress.update(bar, completed=i, total=n))
        clf.config["held_out_accuracy"] = acc.overall
        clf.save(output)
        _echo_judge("speaker classifier", clf, acc.overall, acc.items, acc.per_voice, "voice", "recordings")
        typer.echo(f"wrote {output}", err=True)


@eval_app.command("tts")
def eval_tts(
    recipe: Annotated[str, typer.Argument(help="TTS recipe name or path.")],
    data: Annotated[list[Path], typer.Option("--data", "-d", help="Manifest with 'text' and 'speaker' (repeatable); its file stem labels the split, e.g. held_out, sus.")],
    per_voice: Annotated[int, typer.Option("--per-voice", min=1, help="At most this many rows per voice from each manifest.")] = 10,
    classifier: Annotated[Optional[Path], typer.Option("--classifier", help="Speaker classifier from `audioguide eval speakers` (speaker accuracy).")] = None,
    sweep: Annotated[
        Optional[list[str]],
        typer.Option("--sweep", help="NAME=W1,W2,...: also evaluate these scales of one condition, the others at the recipe's (repeatable)."),
    ] = None,
    judge: Annotated[str, typer.Option("--judge", help="Whisper judge: tiny.en, base (Whisper base, English) or a CTranslate2 model directory ('' skips WER).")] = "tiny.en",
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the tables (Markdown) here.")] = None,
    real: Annotated[bool, typer.Option("--real/--no-real", help="Also judge the manifests' real recordings (the ceiling).")] = True,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Also evaluate without guidance (every scale 1); --no-baseline halves a run that only wants the default.")] = True,
    transcripts: Annotated[Optional[Path], typer.Option("--transcripts", help="Also write every item's transcript and predicted voice here (JSON Lines).")] = None,
    plots: Annotated[
        Optional[Path],
        typer.Option("--plots", help="Also draw PNGs in this directory: log-mel spectrograms of a few samples per setting, WER vs each --sweep scale (needs the plots extra)."),
    ] = None,
    steps: StepsOpt = None,
    weights: WeightsOpt = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
    candidates: CandidatesOpt = None,
) -> None:
    """Speech quality of a TTS recipe per guidance setting: WER through Whisper, speaker accuracy, speed."""
    import json

    from audioguide.evaluation.speaker import SpeakerClassifier
    from audioguide.evaluation.tts import evaluate_tts, parse_sweep, read_splits, sweep_settings

    with _user_errors():
        keep = _plots_ready(plots)
        sweeps = parse_sweep(sweep or [])
        splits = read_splits(data)
        clf = SpeakerClassifier.load(classifier) if classifier is not None else None
        pipe = _load("tts", recipe, weights, threads)
        pipe.sampler_config(steps)
        n = pipe.candidates_for(candidates)
        settings = sweep_settings(pipe.recipe.guidance.scales, sweeps, baseline)
        if pipe.recipe.random_weights:
            typer.secho(f"warning: recipe {pipe.recipe.name!r} has RANDOM weights: expect a WER near 100 %.",
                        fg=typer.colors.YELLOW, err=True)
        with _progress() as progress:
            bar = progress.add_task("synthesising and judging", total=None)
            result = evaluate_tts(pipe, splits, settings, judge or None, clf, seed, per_voice, real=real, steps=steps,
                                  on_item=lambda i, total: progress.update(bar, completed=i, total=total), candidates=n,
                                  samples=keep)
        best_of = f", best of {n} candidates by the verifier" if n > 1 else ""
        table = result.markdown(f"{pipe.recipe.name} on {', '.join(str(p) for p in data)}{best_of}")
        typer.echo(table)
        if report:
            _write_report(report, table)
        if transcripts:
            _write_report(transcripts, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records()))
        if plots is not None:
            from audioguide.evaluation.plots import write_tts_plots

            _echo_written(write_tts_plots(result, plots, conditions=list(sweeps)))


@eval_app.command("descriptions")
def eval_descriptions(
    recipe: Annotated[str, typer.Argument(help="TTS recipe name or path, with a voice description ('style') condition.")] = "speech",
    data: Annotated[Path, typer.Option("--data", "-d", help="Manifest whose first texts are spoken (and whose rows give each voice's gender).")] = Path("held_out.jsonl"),
    texts: Annotated[int, typer.Option("--texts", min=1, help="How many distinct texts of the manifest each description speaks.")] = 8,
    classifier: Annotated[Optional[Path], typer.Option("--classifier", help="Speaker classifier from `audioguide eval speakers` (gender decisions).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the tables (Markdown) here.")] = None,
    weights: WeightsOpt = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Description following: pairs of voice descriptions that differ in pitch, pace or gender, alone and combined; measured F0, speaking rate and speaker-judge decisions."""
    from audioguide.evaluation.descriptions import evaluate_descriptions
    from audioguide.evaluation.speaker import SpeakerClassifier
    from audioguide.manifest import read_manifest

    with _user_errors():
        rows = read_manifest(data)
        chosen = list(dict.fromkeys(r.text for r in rows if r.text and r.text.strip()))[:texts]
        genders = {r.speaker: r.extra["gender"] for r in rows if r.speaker and r.extra.get("gender") in ("male", "female")}
        clf = SpeakerClassifier.load(classifier) if classifier is not None else None
        pipe = _load("tts", recipe, weights, threads)
        with _progress() as progress:
            bar = progress.add_task("synthesising and measuring", total=None)
            result = evaluate_descriptions(pipe, chosen, clf, genders if clf is not None else None, seed,
                                           on_item=lambda i, total: progress.update(bar, completed=i, total=total))
        table = result.markdown(f"{pipe.recipe.name}: description following on {len(chosen)} texts of {data}")
        typer.echo(table)
        if report:
            _write_report(report, table)


def _plots_ready(plots: Path | None) -> int:
    """Before any work: matplotlib is there and the --plots directory can be made. Returns the clips
    per setting to keep for spectrograms (0 without --plots)."""
    if plots is None:
        return 0
    from audioguide.evaluation.plots import SAMPLES_PER_SETTING, prepare_dir, require_matplotlib

    require_matplotlib()
    prepare_dir(plots)
    return SAMPLES_PER_SETTING


def _echo_written(paths: list[Path]) -> None:
    for path in paths:
        typer.echo(f"wrote {path}", err=True)


@eval_app.command("sounds")
def eval_sounds(
    data: Annotated[Path, typer.Option("--data", "-d", help="Training manifest of a sound corpus: real clips with 'audio' and 'label'.")],
    held_out: Annotated[Path, typer.Option("--held-out", help="Held-out manifest of real clips: the classifier's accuracy on it is printed.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Classifier .safetensors to write.")] = Path("sound-classifier.safetensors"),
    per_class: Annotated[Optional[int], typer.Option("--per-class", min=1, help="At most this many training clips per class (default: all).")] = None,
    features: Annotated[Optional[str], typer.Option("--features", help="MLP feature set: scene (log-mel stats + modulation spectrum, librosa; the default) or logmel-stats (the judge of earlier reports).")] = None,
    by_source: Annotated[Optional[bool], typer.Option("--by-source/--no-by-source", help="Also measure accuracy on sources held out of training (3 folds: three more trainings; default: on for the MLP, off for the CNN and the ensemble, whose folds take ~2 h).")] = None,
    augment: Annotated[int, typer.Option("--augment", min=0, max=8, help="Also train on this many degraded copies of every clip (noise, low-pass, tilt; seeded; MLP judge).")] = 0,
    model: Annotated[str, typer.Option("--model", help="Judge: mlp (summary statistics of --features), cnn (a CNN over the log-mel image, trained with mixing of real clips) or ensemble (both, probabilities averaged).")] = "mlp",
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="CNN judge: training steps (default: 3000, ~38 min on 2 threads).")] = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = None,
) -> None:
    """Train the sound-class judge on real clips (never generated audio) and report its held-out accuracy."""
    from dataclasses import replace

    from audioguide.core import AudioguideError
    from audioguide.evaluation.classifier import FEATURE_SETS, file_features
    from audioguide.evaluation.sound import (
        augmented_features,
        clip_rows,
        ensemble_judge,
        held_out_accuracy,
        row_labels,
        source_holdout,
        train_sound_classifier,
        train_sound_cnn,
    )

    with _user_errors():
        if model not in ("mlp", "cnn", "ensemble"):
            raise AudioguideError(f"--model must be mlp, cnn or ensemble, got {model!r}")
        if model == "cnn" and features is not None:
            raise AudioguideError("--features is for the MLP judge; the CNN reads the log-mel image")
        features = features or "scene"
        if features not in FEATURE_SETS:
            raise AudioguideError(f"--features must be one of {', '.join(FEATURE_SETS)}, got {features!r}")
        by_source = model == "mlp" if by_source is None else by_source
        if model == "cnn" and augment:
            raise AudioguideError("--augment is for the MLP judge; the CNN judge augments its log-mel images itself")
        if model == "mlp" and steps is not None:
            raise AudioguideError("--steps is for the CNN judge")
        train_rows, held_rows = _judge_inputs(data, held_out, output, threads)
        shared = {r.audio.resolve() for r in clip_rows(train_rows)} & {r.audio.resolve() for r in clip_rows(held_rows)}
        cnn = None
        with _progress() as progress:
            bar = progress.add_task("features (train)", total=None)
            chosen = clip_rows(train_rows, per_class)
            tick = lambda i, n: progress.update(bar, completed=i, total=n)  # noqa: E731
            augmented = feats = images = None
            if model != "cnn":
                feats = file_features([r.audio for r in chosen], tick, features)
                if augment:
                    bar = progress.add_task(f"features ({augment} degraded copies)", total=None)
                    augmented = augmented_features([r.audio for r in chosen], augment, seed, features, tick)
                clf = train_sound_classifier(train_rows, seed, per_class=per_class, feature_set=features, feats=feats, augmented=augmented)
            if model != "mlp":
                from audioguide.evaluation.cnn_judge import CNNConfig, file_images

                cnn = CNNConfig() if steps is None else replace(CNNConfig(), steps=steps)
                bar = progress.add_task("log-mel images (train)", total=None)
                images = file_images([r.audio for r in chosen], tick)
                bar = progress.add_task("training", total=cnn.steps)
                net = train_sound_cnn(train_rows, seed, cnn, per_class, images=images, on_step=tick)
                clf = net if model == "cnn" else ensemble_judge(clf, net, feats, images, [row_labels(r)[0] for r in chosen])
            bar = progress.add_task("features (held out)", total=None)
            acc = held_out_accuracy(clf, held_rows, on_item=tick)
        clf.config["held_out_accuracy"] = acc.overall
        holdout = None
        if by_source:
            whole = per_class is None  # the features above are those of every clip
            holdout = source_holdout(train_rows, seed, feature_set=features, feats=feats if whole else None,
                                     augmented=augmented if whole else None, cnn=cnn, images=images if whole else None,
                                     ensemble=model == "ensemble")
            clf.config["source_holdout_accuracy"] = holdout.overall
        if acc.mixtures is not None:
            clf.config["mixture_accuracy"] = acc.mixtures[0]
        clf.save(output)
        _echo_judge("sound classifier", clf, acc.overall, acc.items, acc.per_class, "class", "clips")
        if acc.mixtures is not None:
            typer.echo(f"two-source scenes, both classes in the top 2: {100 * acc.mixtures[0]:.1f} % ({acc.mixtures[1]} scenes)")
        if holdout is not None:
            typer.echo(f"held out by source (3 folds, classes with 2+ sources): {100 * holdout.overall:.1f} % ({holdout.items} clips)")
            for name, (a, n, k) in holdout.per_class.items():
                typer.echo(f"  {name:24s} {100 * a:5.1f} % of {n} ({k} sources)")
            if holdout.single_source:
                typer.echo(f"  one source only (not measurable): {', '.join(holdout.single_source)}")
        if shared:
            typer.secho(f"warning: {len(shared)} held-out clip(s) are also training clips: the held-out accuracy is optimistic.",
                        fg=typer.colors.YELLOW, err=True)
        typer.echo(f"wrote {output}", err=True)


@eval_app.command("t2a")
def eval_t2a(
    recipe: Annotated[str, typer.Argument(help="Text-to-audio recipe name or path.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Held-out manifest of a sound corpus: 'caption', 'label' and the real 'audio'.")],
    classifier: Annotated[Path, typer.Option("--classifier", help="Sound classifier from `audioguide eval sounds` (prompt adherence, FD).")],
    per_class: Annotated[Optional[int], typer.Option("--per-class", min=1, help="At most this many rows per class, in manifest order (default: all).")] = None,
    cfg: Annotated[Optional[str], typer.Option("--cfg", help="Guidance scales to sweep, one for every condition, e.g. 1,3,5,8.")] = None,
    rescale: Annotated[Optional[str], typer.Option("--rescale", help="CFG-rescale phi values to sweep, e.g. 0,0.7.")] = None,
    steps: Annotated[Optional[str], typer.Option("--steps", help="Sampler steps to sweep, e.g. 1,8.")] = None,
    seconds: Annotated[Optional[float], typer.Option("--seconds", help="Generate every row this long (default: the row's duration, within the recipe's range).")] = None,
    report: Annotated[Optional[Path], typer.Option("--report", help="Also write the tables (Markdown) here.")] = None,
    save_wavs: Annotated[Optional[Path], typer.Option("--save-wavs", help="Also keep the generated clips, as DIR/<setting>/<row id>.wav.")] = None,
    plots: Annotated[
        Optional[Path],
        typer.Option("--plots", help="Also draw PNGs in this directory: log-mel spectrograms of a few clips per setting, adherence and FD vs --cfg (needs the plots extra)."),
    ] = None,
    items: Annotated[Optional[Path], typer.Option("--items", help="Also write every item's class, judged classes and hit here (JSON Lines): pair two runs with scripts/compare_sound_items.py.")] = None,
    compose: Annotated[
        Optional[str],
        typer.Option("--compose", help="Draw each two-source scene as a prompt in parts, its sources' words at these weights (foreground first), e.g. 1,0.6."),
    ] = None,
    weights: WeightsOpt = None,
    threads: ThreadsOpt = None,
    seed: SeedOpt = 0,
) -> None:
    """Text-to-audio quality per setting (the recipe's, then the --cfg x --rescale x --steps grid): prompt adherence, FD, speed."""
    import json

    from audioguide.core import AudioguideError
    from audioguide.evaluation.sound import evaluate_t2a, load_sound_classifier, parse_grid, sweep_settings
    from audioguide.manifest import read_manifest
    from audioguide.recipes import load_recipe

    with _user_errors():
        keep = _plots_ready(plots)
        grids = parse_grid(cfg, "--cfg"), parse_grid(rescale, "--rescale"), parse_grid(steps, "--steps", integer=True)
        r = load_recipe(recipe)
        if r.task != "t2a":
            raise AudioguideError(f"recipe {r.name!r} is a {r.task} recipe; sound evaluation needs a t2a recipe "
                                  "(speech: `audioguide eval tts`)")
        settings = sweep_settings(r, *grids)
        rows = read_manifest(data)
        clf = load_sound_classifier(classifier)
        pipe = _load("t2a", r, weights, threads)
        if pipe.recipe.random_weights:
            typer.secho(f"warning: recipe {pipe.recipe.name!r} has RANDOM weights: expect adherence near chance.",
                        fg=typer.colors.YELLOW, err=True)
        with _progress() as progress:
            bar = progress.add_task("generating and judging", total=None)
            result = evaluate_t2a(pipe, rows, clf, settings, lambda i, n: progress.update(bar, completed=i, total=n), seconds,
                                  seed=seed, per_class=per_class, wav_dir=save_wavs, samples=keep,
                                  compose=parse_grid(compose, "--compose") or None)
        table = result.markdown(f"{pipe.recipe.name} on {data}")
        typer.echo(table)
        if report:
            _write_report(report, table)
        if items:
            _write_report(items, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.records()))
        if plots is not None:
            from audioguide.evaluation.plots import write_t2a_plots

            _echo_written(write_t2a_plots(result, plots))


def _version(value: bool) -> None:
    if value:
        from audioguide import __version__

        typer.echo(f"audioguide {__version__}")
        raise typer.Exit()


@app.callback()
def _app(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Guidance-aware text-to-speech and text-to-audio."""


@app.command("recipes")
def list_recipes() -> None:
    """List the built-in recipes, one line each."""
    from audioguide.components import local_weights
    from audioguide.recipes import builtin_recipes

    with _user_errors():
        for r in builtin_recipes():
            flag = (" [train only]" if r.model is None else " [random weights]" if r.random_weights
                    else " [weights not shipped yet]" if any(w and not local_weights(w, r) for w in (r.model.weights, r.model.guidance_weights))
                    else "")
            typer.echo(f"{r.name:24s} {r.task:4s} {r.description}{flag}")


def main() -> None:
    """Run the CLI; a usage error (bad option, missing argument, unknown command) is one line too."""
    try:  # typer >= 0.2x vendors click; older typers use click itself
        from typer._click import exceptions as click_errors
    except ImportError:
        from click import exceptions as click_errors  # type: ignore[no-redef]

    from audioguide.core import terminate_on_sigterm

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    terminate_on_sigterm()
    try:
        code = app(standalone_mode=False, prog_name="audioguide")
    except KeyboardInterrupt as e:  # outside a command's own handling (e.g. while importing)
        message, code = _interruption(e)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    except getattr(click_errors, "NoArgsIsHelpError", ()):
        code = 2  # the help is already printed
    except click_errors.UsageError as e:
        hint = f" (see `{e.ctx.command_path} --help`)" if e.ctx is not None else ""
        typer.secho(f"error: {e.format_message()}{hint}", fg=typer.colors.RED, err=True)
        code = 2
    except click_errors.ClickException as e:
        typer.secho(f"error: {e.format_message()}", fg=typer.colors.RED, err=True)
        code = e.exit_code
    except typer.Abort as e:  # click's form of a KeyboardInterrupt (or SIGTERM) outside a command's handling
        message, code = _interruption(e.__cause__ if isinstance(e.__cause__, KeyboardInterrupt) else KeyboardInterrupt())
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
