"""Codec-token sampling: truncation rules, empirical frequencies, and the delay-pattern AR loop."""

from __future__ import annotations

import math

import pytest
import torch

from audioguide.sampling import apply_delay_pattern, sample_delayed, sample_next_token, undo_delay_pattern


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def draw(probs: list[float], n: int = 20000, seed: int = 0, **kwargs) -> torch.Tensor:
    """Token counts of ``n`` draws from logits ``log(probs)``."""
    logits = torch.tensor(probs).log().expand(n, len(probs))
    tokens = sample_next_token(logits, gen(seed), **kwargs)
    assert tokens.shape == (n,) and tokens.dtype == torch.long
    return torch.bincount(tokens, minlength=len(probs))


def chi_square(counts: torch.Tensor, expected_probs: torch.Tensor) -> float:
    expected = expected_probs * counts.sum()
    kept = expected > 0
    assert int(counts[~kept].sum()) == 0
    return float(((counts[kept] - expected[kept]) ** 2 / expected[kept]).sum())


def test_greedy():
    logits = torch.randn(3, 4, 50, generator=gen(1))
    assert torch.equal(sample_next_token(logits, None, temperature=0.0), logits.argmax(-1))
    assert torch.equal(sample_next_token(logits, gen(2), temperature=1.3, top_k=1), logits.argmax(-1))
    assert torch.equal(sample_next_token(logits, gen(3), top_p=1e-6), logits.argmax(-1))


def test_frequencies_follow_tempered_softmax():
    logits = torch.tensor([1.0, 0.2, -0.5, 2.0, 0.0, -1.5])
    tokens = sample_next_token(logits.expand(20000, 6), gen(4), temperature=0.7)
    counts = torch.bincount(tokens, minlength=6)
    # 5 degrees of freedom: P(chi2 > 30) < 2e-5
    assert chi_square(counts, (logits / 0.7).softmax(-1)) < 30
    assert chi_square(counts, logits.softmax(-1)) > 100  # the test does see the temperature


def test_top_k_keeps_only_the_k_largest():
    probs = [0.05, 0.3, 0.1, 0.2, 0.15, 0.2]
    counts = draw(probs, top_k=3)  # tokens 1, 3, 5 (0.3, 0.2, 0.2)
    nucleus = torch.tensor([0.0, 0.3, 0.0, 0.2, 0.0, 0.2]) / 0.7
    assert chi_square(counts, nucleus) < 25  # 2 degrees of freedom
    rows = torch.randn(500, 40, generator=gen(5))
    tokens = sample_next_token(rows, gen(6), top_k=4)
    assert bool((rows.topk(4, dim=-1).indices == tokens[:, None]).any(-1).all())


def test_top_k_draws_among_the_k_by_their_tempered_softmax_reproducibly():
    """The top-k draw (torch.topk, one draw among the k, mapped back to the vocabulary): only the k
    largest are ever drawn, with the frequencies of the softmax over their tempered values, and the
    same generator state gives the same tokens (row by row, whatever the batch shape)."""
    logits = torch.tensor([0.3, 2.0, -1.0, 1.2, 0.9, -0.4, 1.5, 0.0])
    k, temperature, n = 4, 0.8, 40000
    tokens = sample_next_token(logits.expand(n, 8), gen(12), temperature=temperature, top_k=k)
    counts = torch.bincount(tokens, minlength=8)
    top = logits.topk(k).indices  # tokens 1, 6, 3, 4
    expected = torch.zeros(8).index_put_((top,), (logits[top] / temperature).softmax(-1))
    assert chi_square(counts, expected) < 20  # nothing outside the top k; 3 degrees of freedom: P(chi2 > 20) < 2e-4
    untempered = torch.zeros(8).index_put_((top,), logits[top].softmax(-1))
    assert chi_square(counts, untempered) > 100  # the test does see the temperature
    assert torch.equal(tokens, sample_next_token(logits.expand(n, 8), gen(12), temperature=temperature, top_k=k))
    assert not torch.equal(tokens, sample_next_token(logits.expand(n, 8), gen(13), temperature=temperature, top_k=k))
    batched = sample_next_token(logits.expand(n // 4, 4, 8), gen(12), temperature=temperature, top_k=k)
    assert torch.equal(batched.reshape(-1), tokens)


def test_top_k_never_draws_a_candidate_without_mass():
    """Within the top k, candidates whose probability underflows to 0 (or that the nucleus drops)
    are never drawn, wherever topk puts them."""
    logits = torch.full((20000, 30), -1e4)
    logits[:, 7], logits[:, 3], logits[:, 12], logits[:, 20] = 0.0, 0.4, -300.0, -500.0
    counts = torch.bincount(sample_next_token(logits, gen(14), top_k=4), minlength=30)
    assert int(counts[7] + counts[3]) == 20000 and int(counts[3]) > int(counts[7]) > 0
    counts = torch.bincount(sample_next_token(logits, gen(15), top_k=4, top_p=0.5), minlength=30)
    assert int(counts[3]) == 20000  # 0.6 of the mass alone covers 0.5


@pytest.mark.parametrize(
    "top_p, nucleus",
    [
        (0.4, [0, 1, 0, 0]),  # 0.5 alone covers 0.4
        (0.7, [0, 0.5, 0, 0.25]),  # 0.5 + 0.25 = 0.75 >= 0.7
        (0.8, [0, 0.5, 0.15, 0.25]),  # needs the 0.15 as well
        (1.0, [0.1, 0.5, 0.15, 0.25]),
    ],
)
def test_top_p_keeps_the_nucleus(top_p, nucleus):
    counts = draw([0.1, 0.5, 0.15, 0.25], top_p=top_p)
    expected = torch.tensor(nucleus) / sum(nucleus)
    assert chi_square(counts, expected) < 25  # at most 3 degrees of freedom


def test_top_k_then_top_p_and_temperature_compose():
    counts = draw([0.4, 0.3, 0.2, 0.1], top_k=3, top_p=0.5, temperature=1.0)
    # top-3 renormalises to 4/9, 3/9, 2/9; the nucleus for 0.5 is then {0, 1}
    assert chi_square(counts, torch.tensor([4.0, 3.0, 0.0, 0.0]) / 7) < 25


def test_same_seed_same_tokens():
    logits = torch.randn(2, 4, 1000, generator=gen(7))
    a = sample_next_token(logits, gen(8), temperature=1.2, top_k=50, top_p=0.9)
    assert a.shape == (2, 4)
    assert torch.equal(a, sample_next_token(logits, gen(8), temperature=1.2, top_k=50, top_p=0.9))
    many = torch.randn(1000, 1000, generator=gen(9))
    assert not torch.equal(sample_next_token(many, gen(10)), sample_next_token(many, gen(11)))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": math.nan},
        {"top_k": -1},
        {"top_k": 1.5},
        {"top_p": 0.0},
        {"top_p": 1.2},
    ],
)
def test_bad_sampling_arguments(kwargs):
    with pytest.raises(ValueError):
        sample_next_token(torch.zeros(3, 5), gen(), **kwargs)


def test_sampling_needs_a_generator():
    with pytest.raises(ValueError, match="Generator"):
        sample_next_token(torch.zeros(3, 5), None)


def test_delay_pattern_by_hand_and_round_trip():
    codes = torch.tensor([[[1, 2, 3], [4, 5, 6]]])
    assert apply_delay_pattern(codes, pad_id=-1).tolist() == [[[1, 2, 3, -1], [-1, 4, 5, 6]]]
    codes = torch.randint(0, 100, (2, 4, 7), generator=gen(12))
    delayed = apply_delay_pattern(codes, pad_id=-1)
    assert delayed.shape == (2, 4, 10)
    assert int((delayed == -1).sum()) == 2 * 4 * 3  # K - 1 pads per codebook row
    for k in range(4):
        assert bool((delayed[:, k, :k] == -1).all()) and bool((delayed[:, k, k + 7 :] == -1).all())
    assert torch.equal(undo_delay_pattern(delayed, 4), codes)
    with pytest.raises(ValueError):
        undo_delay_pattern(delayed, 3)
    with pytest.raises(ValueError):
        apply_delay_pattern(codes[0], pad_id=-1)


def test_sample_delayed_runs_the_delay_pattern():
    B, K, T, V, BOS, PAD = 2, 3, 5, 16, 16, 17

    def target(b: int, k: int, frame: int) -> int:
        return (k + 2 * frame + 3 * b) % V

    calls: list[torch.Tensor] = []

    def step(prev: torch.Tensor) -> torch.Tensor:
        s = len(calls)
        calls.append(prev.clone())
        for b in range(B):
            for k in range(K):
                frame = s - 1 - k  # what this codebook emitted at the previous step
                expected = BOS if s == 0 else (target(b, k, frame) if 0 <= frame < T else PAD)
                assert int(prev[b, k]) == expected
        logits = torch.zeros(B, K, V)
        for b in range(B):
            for k in range(K):
                logits[b, k, target(b, k, s - k)] = 60.0  # ~certain, even at temperature 1
        return logits

    codes = sample_delayed(step, B, K, T, gen(13), bos_id=BOS, pad_id=PAD)
    assert len(calls) == T + K - 1
    expected = torch.tensor([[[target(b, k, f) for f in range(T)] for k in range(K)] for b in range(B)])
    assert codes.dtype == torch.long and torch.equal(codes, expected)


@pytest.mark.parametrize(
    "kwargs",
    [{"batch": 0}, {"n_codebooks": 0}, {"n_frames": 0}, {"temperature": -1.0}, {"top_p": 2.0}],
)
def test_sample_delayed_bad_arguments(kwargs):
    args = {"batch": 1, "n_codebooks": 2, "n_frames": 3} | kwargs
    with pytest.raises(ValueError):
        sample_delayed(lambda prev: torch.zeros(1, 2, 4), generator=gen(), bos_id=4, pad_id=5, **args)


def test_sample_delayed_checks_the_logits_shape():
    with pytest.raises(ValueError, match="logits"):
        sample_delayed(lambda prev: torch.zeros(1, 3, 4), 1, 2, 3, gen(), bos_id=4, pad_id=5)
