"""Pipeline.stream: chunks as sentences finish, concatenating to exactly the one-call audio; errors
before the first chunk; speed; control characters never reach the conditioners."""

from __future__ import annotations

import numpy as np
import pytest

from audioguide.core import AudioguideError, clean_text
from audioguide.pipeline import PAUSE_SECONDS, Pipeline, join_part, join_speech
from tests.conftest import TINY_AE, TINY_SPEECH, TINY_TTS

DIT = ('type = "dit"\n    dim = 32\n    depth = 2\n    heads = 2\n    patch = 2\n    aligned = "text"\n    encoder_depth = 1\n'
       '    decoder_depth = 1\n    cond_mode = "cross"\n    seed = 3')
TEXT = "A first sentence, short. Then a second one! And a third?"


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    """Aligned speech (phonemes, durations) on a tiny DiT whose zero-initialised weights are filled in."""
    import torch

    path = tmp_path_factory.mktemp("r") / "speech.toml"
    import textwrap

    path.write_text(textwrap.dedent(TINY_SPEECH.replace("AE\n", TINY_AE).replace("MODEL", DIT)
                                    .replace("SAMPLER", 'type = "euler"\n    steps = 2').replace("GUIDANCE", "scales = { text = 2.0 }")
                                    .replace("TAIL", "")))
    pipe = Pipeline.from_recipe(path)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in pipe.model.parameters():
            if not p.any():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return pipe


def test_chunks_concatenate_to_the_call_bit_for_bit(speech):
    whole = speech(TEXT, seed=5, inputs={"speaker": "s1"})[0]
    chunks = list(speech.stream(TEXT, seed=5, inputs={"speaker": "s1"}))
    assert len(chunks) == 3  # one per sentence
    assert np.array_equal(np.concatenate(chunks), whole)
    gap = int(PAUSE_SECONDS * speech.sample_rate)
    assert not chunks[1][:gap].any() and chunks[1][gap:].any()  # a later sentence starts with its pause
    assert chunks[0][0] == 0.0  # faded in


def test_a_one_piece_text_streams_as_one_unfaded_chunk(write_recipe):
    pipe = Pipeline.from_recipe(write_recipe(TINY_TTS))
    chunks = list(pipe.stream("Just one sentence", seed=2))
    assert len(chunks) == 1 and np.array_equal(chunks[0], pipe("Just one sentence", seed=2)[0])


def test_stream_checks_its_input_before_the_first_chunk(speech):
    with pytest.raises(AudioguideError, match="no input 'colour'"):
        speech.stream(TEXT, inputs={"colour": "red"})  # raised at the call, not at next()
    with pytest.raises(AudioguideError, match="speed"):
        speech.stream(TEXT, speed=9.0)
    with pytest.raises(AudioguideError, match="one text"):
        speech.stream([TEXT, TEXT])
    plan = speech.prepare([TEXT, TEXT])
    with pytest.raises(AudioguideError, match="a stream is one text"):
        speech.chunks(plan)


def test_speed_scales_the_predicted_durations(speech):
    normal = speech("Hello there, how are you?", seed=1)[0]
    fast = speech("Hello there, how are you?", seed=1, speed=2.0)[0]
    slow = speech("Hello there, how are you?", seed=1, speed=0.5)[0]
    assert len(fast) < 0.7 * len(normal) and len(slow) > 1.5 * len(normal)
    assert np.array_equal(speech("Hello there.", seed=1, speed=1.0)[0], speech("Hello there.", seed=1)[0])
    with pytest.raises(AudioguideError, match="speed or seconds"):
        speech("Hello.", speed=2.0, seconds=1.0)


def test_speed_applies_to_speech_only(write_recipe):
    from tests.conftest import TINY_TTS as T

    sound = Pipeline.from_recipe(write_recipe(T.replace('task = "tts"', 'task = "t2a"').replace("conditioners.text", "conditioners.caption")
                                              .replace("text = 3.0", "caption = 3.0")))
    with pytest.raises(AudioguideError, match="speed applies to speech"):
        sound("a dog", speed=2.0)


def test_terminal_escapes_and_control_characters_are_not_read_aloud(speech):
    dirty = "\x1b[31mHello\x1b[0m there,\u200b how are you?\x07"
    assert clean_text(dirty) == "Hello there, how are you?"
    assert np.array_equal(speech(dirty, seed=3)[0], speech("Hello there, how are you?", seed=3)[0])
    assert speech.prepare(dirty).pieces[0].text == "Hello there, how are you?"
    with pytest.raises(AudioguideError, match="empty|pronounceable"):
        speech("\x1b[1;31m\x07")


def test_join_speech_is_its_parts_in_order():
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(n).astype(np.float32) for n in (500, 80, 1200)]
    parts = [join_part(w, 8000, first=i == 0) for i, w in enumerate(waves)]
    assert np.array_equal(np.concatenate(parts), join_speech(waves, 8000))
    assert len(parts[1]) == int(PAUSE_SECONDS * 8000) + 80
