"""The public staged Pipeline API: prepare -> draw -> choose -> decode is the one-call API, and
drawing many pieces of different lengths in one batch gives what drawing each alone gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioguide.core import AudioguideError
from audioguide.pipeline import Pipeline
from audioguide.sampling import RowStreams, TokenSampler
from tests.conftest import TINY_AE, TINY_SPEECH



DIT = ('type = "dit"\n    dim = 32\n    depth = 2\n    heads = 2\n    patch = 2\n    aligned = "text"\n    encoder_depth = 1\n'
       '    decoder_depth = 1\n    cond_mode = "cross"\n    seed = 3')
LM = ('type = "codec-lm"\n    dim = 32\n    depth = 1\n    heads = 2\n    codebook_size = 16\n    aligned = "text"\n'
      '    encoder_depth = 1\n    prior_codebooks = 1\n    seed = 3')
VERIFIER = '[verifier]\n    type = "phones"\n    channels = 8\n    dim = 16\n    dilations = [1, 2]\n    kernel = 3\n    candidates = 2'
TEXTS = ["Ah.", "A longer sentence, with a pause. And a second one!", "Oh oh oh, ee.", "Hi."]

CASES = {
    "flow-dit": (DIT, 'type = "euler"\n    steps = 3', "scales = { text = 2.0, speaker = 1.5 }\n    interval = [0.0, 0.8]"),
    "meanflow-dit": (DIT + "\n    mean_flow = true", 'type = "meanflow"\n    steps = 2', "scales = { text = 2.0 }"),
    "ddim-eta": (DIT + '\n    kind = "v"', 'type = "ddim"\n    steps = 3\n    eta = 0.5', "scales = { text = 2.0 }"),
    "euler-cfgpp": (DIT, 'type = "euler-cfgpp"\n    steps = 2', "scales = { text = 0.6 }"),
    "codec-lm": (LM, 'type = "ar"\n    top_k = 8\n    prior_weight = 0.5', "scales = { text = 2.0, speaker = 1.5 }"),
}


def _pipe(write_recipe, case: str, verifier: bool = False) -> Pipeline:
    model, sampler, guidance = CASES[case]
    text = (TINY_SPEECH.replace("AE\n", TINY_AE).replace("MODEL", model).replace("SAMPLER", sampler)
            .replace("GUIDANCE", guidance).replace("TAIL", VERIFIER if verifier else ""))
    pipe = Pipeline.from_recipe(write_recipe(text))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a DiT starts as exactly zero (adaLN-Zero): give its zeroed weights values
        for p in pipe.model.parameters():
            if not p.any():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    return pipe


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_batch_of_pieces_of_different_lengths_draws_what_each_draws_alone(write_recipe, case):
    pipe = _pipe(write_recipe, case)
    plan = pipe.prepare(TEXTS, seed=11, inputs={"speaker": "s1"})
    frames = [p.frames for p in plan.pieces]
    assert len(plan.pieces) == 5 and len(set(frames)) > 2  # the long text is two sentences
    assert len(pipe.batches(plan, 8)) == 1  # one batch, padded
    alone, batched = pipe.draw(plan, batch_size=1), pipe.draw(plan, batch_size=8)
    for piece, a, b in zip(plan.pieces, alone, batched):
        assert a.shape == b.shape and a.shape[-1] == piece.frames
        if isinstance(pipe.sampler, TokenSampler):
            assert torch.equal(a, b)
        else:
            assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()


def test_batched_calls_give_the_same_audio_as_one_piece_at_a_time(write_recipe):
    pipe = _pipe(write_recipe, "flow-dit")
    one, many = pipe(TEXTS, seed=4), pipe(TEXTS, seed=4, batch_size=3)
    for a, b in zip(one, many):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4


def test_the_stages_compose_to_the_call_bit_for_bit(write_recipe):
    pipe = _pipe(write_recipe, "codec-lm", verifier=True)
    audio = pipe(TEXTS[:2], seed=7)
    plan = pipe.prepare(TEXTS[:2], seed=7)
    assert plan.candidates == 2 and [p.index for p in plan.pieces] == [0, 1, 1]
    assert [p.seed for p in plan.pieces] == [7, 8, 8]
    samples = pipe.draw(plan)
    assert all(s.shape[:2] == (2, pipe.model.n_codebooks) for s in samples)
    chosen = pipe.choose(plan, samples)
    for piece, s, c in zip(plan.pieces, samples, chosen):
        assert torch.equal(c[0], s[pipe.best(piece, s)])
    first = pipe.decode(chosen[0])[0][: int(round(plan.pieces[0].seconds * pipe.sample_rate))]
    assert np.array_equal(first.numpy(), audio[0])


def test_candidates_of_several_sentences_share_a_batch_and_keep_their_choice(write_recipe):
    pipe = _pipe(write_recipe, "flow-dit", verifier=True)
    alone, batched = pipe(TEXTS, seed=2), pipe(TEXTS, seed=2, batch_size=4)
    for a, b in zip(alone, batched):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-4


def test_guidance_that_reduces_over_frames_batches_equal_lengths_only(write_recipe):
    pipe = _pipe(write_recipe, "flow-dit")
    plan = pipe.prepare(TEXTS + ["Ah."], seed=0, rescale=0.7)
    batches = pipe.batches(plan, 8)
    for batch in batches:
        assert len({plan.pieces[i].frames for i in batch}) == 1
    assert sorted(i for b in batches for i in b) == list(range(len(plan.pieces)))
    assert any({0, 5} <= set(b) for b in batches)  # the two "Ah." pieces
    with pytest.raises(AudioguideError, match="batch_size"):
        pipe.batches(plan, 0)


def test_pieces_know_their_text_seed_policy_and_length(write_recipe):
    pipe = _pipe(write_recipe, "meanflow-dit")
    plan = pipe.prepare(["One.", "Two."], seed=5)  # no speaker given: the speaker condition is absent
    assert [p.text for p in plan.pieces] == ["One.", "Two."] and [p.seed for p in plan.pieces] == [5, 6]
    assert dict(plan.pieces[0].policy.scales) == {"text": 2.0}
    assert all(p.frames == int(p.cond["text.durations"].sum()) for p in plan.pieces)
    assert plan.sampler.steps == 2 and pipe.steps_for() == 2 and pipe.steps_for(3) == 3
    with pytest.raises(AudioguideError, match="seed"):
        pipe.prepare(["One.", "Two."], seed=2**64 - 1)  # the second text's seed is out of range


def test_row_streams_draw_each_group_from_its_own_generator():
    gens = lambda: (torch.Generator().manual_seed(1), torch.Generator().manual_seed(2))  # noqa: E731
    x = RowStreams(gens(), (2, 1), (5, 7)).randn(3, 7)
    assert x.shape == (3, 3, 7) and torch.equal(x[:2, :, 5:], torch.zeros(2, 3, 2))
    a, b = gens()
    assert torch.equal(x[:2, :, :5], torch.randn((2, 3, 5), generator=a))
    assert torch.equal(x[2:], torch.randn((1, 3, 7), generator=b))
    assert torch.equal(RowStreams(gens(), (2, 1), (5, 7)).noise_like(x), x)
    with pytest.raises(ValueError):
        RowStreams((), ())
