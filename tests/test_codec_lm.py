"""Codec LM: KV cache vs full forward, batched multi-branch CFG, generation and training."""

from __future__ import annotations

import pytest
import torch

from audioguide.conditioners import Characters
from audioguide.guidance import Guidance
from audioguide.models.codec_lm import CodecLM, CodecLMConfig
from audioguide.sampling.tokens import apply_delay_pattern, fuse_prior, guided_lm_step, sample_codec_lm
from audioguide.training.conditions import draw_keep
from audioguide.training.tokens import codec_lm_loss, delayed_io

V, K = 12, 3
TEXTS = ["hello world", "hi", "a longer sentence here"]
STYLES = ["calm", "loud and fast", "x"]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(names: tuple[str, ...] = ("text", "style"), seed: int = 0, **overrides) -> CodecLM:
    sizes = {"dim": 32, "depth": 2, "heads": 2, "mlp_ratio": 2.0, "codebook_size": V, "seed": seed}
    cfg = CodecLMConfig(**{**sizes, **overrides})
    conditioners = {n: Characters(Characters.Config(dim=16)) for n in names}
    return CodecLM(cfg, K, conditioners).eval()


def random_delayed(model: CodecLM, B: int, S: int, seed: int = 1) -> torch.Tensor:
    """A teacher-forced input sequence: bos column then random codes."""
    codes = torch.randint(0, V, (B, K, S), generator=gen(seed))
    codes[:, :, 0] = model.bos_id
    return codes


def keep_of(batch: int, kept: set[str], names=("text", "style")) -> dict[str, torch.Tensor]:
    return {n: torch.full((batch,), n in kept) for n in names}


def cached_logits(model: CodecLM, codes_in: torch.Tensor, cond, keep) -> torch.Tensor:
    cache = model.prefill(cond, keep)
    return torch.stack([model.step(cache, codes_in[:, :, s]) for s in range(codes_in.shape[2])], dim=2)


# ---------------------------------------------------------------------------------------------


def test_config_validation():
    with pytest.raises(ValueError, match="even"):
        CodecLMConfig(dim=30, heads=4)
    with pytest.raises(ValueError):
        CodecLMConfig(codebook_size=0)
    with pytest.raises(ValueError):
        CodecLMConfig(depth=0)
    with pytest.raises(ValueError, match="n_codebooks"):
        CodecLM(CodecLMConfig(dim=32, heads=2), 0, {"text": Characters(Characters.Config(dim=8))})
    with pytest.raises(ValueError, match="conditioner"):
        CodecLM(CodecLMConfig(dim=32, heads=2), 2, {})


@pytest.mark.parametrize("qk_norm", [True, False])
def test_kv_cache_matches_full_forward_with_mixed_prefixes(qk_norm):
    model = tiny(qk_norm=qk_norm)
    cond = model.encode({"text": TEXTS, "style": STYLES})
    keep = {"text": torch.tensor([True, False, True]), "style": torch.tensor([True, True, False])}
    codes_in = random_delayed(model, 3, 7)
    with torch.no_grad():
        full = model(codes_in, cond, keep)
        cached = cached_logits(model, codes_in, cond, keep)
    assert full.shape == (3, K, 7, V)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_static_kv_cache_is_written_in_place_grows_past_its_room_and_matches_full_forward():
    """The preallocated cache: ``prefill(..., steps)`` makes room for the steps, each step writes its
    keys and values in place (the cache tensors never move), more steps than reserved grow it by
    doubling, and the logits are those of one uncached forward in every case. Five rows use the
    transposed output heads; rows without prefix padding attend without a mask."""
    model = tiny()
    texts, styles = TEXTS + ["four", "the fifth row"], STYLES + ["six", "seven"]
    keep = {"text": torch.tensor([True, False, True, True, False]), "style": torch.tensor([True, True, False, True, True])}
    cond = model.encode({"text": texts, "style": styles})
    codes_in = random_delayed(model, 5, 9)
    with torch.no_grad():
        full = model(codes_in, cond, keep)
        cache = model.prefill(cond, keep, steps=9)
        assert cache.head is not None and cache.bias is not None and cache.capacity == cache.length + 9
        where = [t.data_ptr() for t in cache.keys + cache.values]
        cached = torch.stack([model.step(cache, codes_in[:, :, s]) for s in range(9)], dim=2)
        assert [t.data_ptr() for t in cache.keys + cache.values] == where and cache.length == cache.capacity
        torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
        small = model.prefill(cond, keep, steps=1)
        grown = torch.stack([model.step(small, codes_in[:, :, s]) for s in range(9)], dim=2)
        assert small.capacity >= small.length == cache.length and small.steps == 9
        torch.testing.assert_close(grown, full, atol=1e-5, rtol=1e-5)
        # no padded key (one condition, texts of one length, all kept): no mask at all
        one = tiny(names=("text",))
        cond1 = one.encode({"text": ["abcd", "efgh"]})
        plain = one.prefill(cond1, {}, steps=9)
        assert plain.bias is None and plain.head is None
        stepped = torch.stack([one.step(plain, codes_in[:2, :, s]) for s in range(9)], dim=2)
        torch.testing.assert_close(stepped, one(codes_in[:2], cond1, {}), atol=1e-5, rtol=1e-5)
        # bad columns are refused before the cache changes
        length = plain.length
        with pytest.raises(ValueError, match="shape"):
            one.step(plain, codes_in[:2, :2, 0])
        bad = codes_in[:2, :, 0].clone()
        bad[1, 0] = model.pad_id + 1  # would be codebook 1's first row in the stacked table
        with pytest.raises(IndexError):
            one.step(plain, bad)
        assert plain.length == length
    with pytest.raises(ValueError, match="steps"):
        model.prefill(cond, keep, steps=-1)


def test_row_in_a_padded_batch_equals_the_row_alone():
    """Per-row positions: prefix padding and null conditions do not change a row's logits."""
    model = tiny()
    keep = {"text": torch.tensor([True, False, True]), "style": torch.tensor([True, True, False])}
    cond = model.encode({"text": TEXTS, "style": STYLES})
    codes_in = random_delayed(model, 3, 6)
    with torch.no_grad():
        batched = model(codes_in, cond, keep)
        for b in range(3):
            alone_cond = model.encode({"text": [TEXTS[b]], "style": [STYLES[b]]})
            alone = model(codes_in[b : b + 1], alone_cond, {n: k[b : b + 1] for n, k in keep.items()})
            torch.testing.assert_close(batched[b : b + 1], alone, atol=1e-5, rtol=1e-5)
    # the null condition really replaces the text: same row, keep True vs False differ
    assert not torch.allclose(batched[0], model(codes_in, cond, keep_of(3, {"style"}))[0].detach())


# ---------------------------------------------------------------------------------------------
# Guidance


def nested_reference(model, cond, codes_in, s_t, s_s):
    """Separate uncached forwards per branch, combined as u00 + s_t (u_t0 - u00) + s_s (u_ts - u_t0)."""
    B = codes_in.shape[0]
    with torch.no_grad():
        u00, ut0, uts = (
            model(codes_in, cond, keep_of(B, kept)).log_softmax(-1) for kept in (set(), {"text"}, {"text", "style"})
        )
    return u00 + s_t * (ut0 - u00) + s_s * (uts - ut0)


def test_batched_cfg_equals_branch_by_branch():
    model = tiny()
    cond = model.encode({"text": TEXTS[:2], "style": STYLES[:2]})
    policy = Guidance(scales={"text": 3.0, "style": 1.5})
    codes_in = random_delayed(model, 2, 6)
    ref = nested_reference(model, cond, codes_in, 3.0, 1.5)
    with torch.no_grad():
        step = guided_lm_step(model, cond, policy)
        guided = torch.stack([step(codes_in[:, :, s]) for s in range(6)], dim=2)
    torch.testing.assert_close(guided, ref, atol=1e-4, rtol=1e-4)


def greedy_reference(model, cond, n_frames, s_t, s_s):
    """Greedy delayed decoding where every step re-runs uncached per-branch forwards."""
    B = cond["text"].shape[0]
    cols = [torch.full((B, K), model.bos_id)]
    for s in range(n_frames + K - 1):
        logp = nested_reference(model, cond, torch.stack(cols, dim=2), s_t, s_s)[:, :, -1]
        frame = s - torch.arange(K)
        valid = (frame >= 0) & (frame < n_frames)
        cols.append(torch.where(valid, logp.argmax(-1), torch.full((B, K), model.pad_id)))
    delayed = torch.stack(cols[1:], dim=2)
    return torch.stack([delayed[:, k, k : k + n_frames] for k in range(K)], dim=1)


def test_greedy_generate_equals_sequential_reference():
    model = tiny(seed=3)
    cond = model.encode({"text": TEXTS[:2], "style": STYLES[:2]})
    policy = Guidance(scales={"text": 2.5, "style": 2.0})
    codes = sample_codec_lm(model, cond, 5, policy, None, temperature=0.0)
    assert torch.equal(codes, greedy_reference(model, cond, 5, 2.5, 2.0))


def test_generate_is_reproducible_and_well_formed():
    model = tiny()
    cond = model.encode({"text": TEXTS, "style": STYLES})
    policy = Guidance(scales={"text": 2.0, "style": 1.5})
    a = sample_codec_lm(model, cond, 9, policy, gen(7))
    b = sample_codec_lm(model, cond, 9, policy, gen(7))
    c = sample_codec_lm(model, cond, 9, policy, gen(8))
    assert a.shape == (3, K, 9) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert int(a.min()) >= 0 and int(a.max()) < V  # no bos / pad in the output
    d = sample_codec_lm(model, cond, 4, policy, gen(7), temperature=0.8, top_k=3, top_p=0.9)
    assert d.shape == (3, K, 4) and int(d.max()) < V


def test_per_call_policy_override_changes_the_distribution_by_the_formula():
    model = tiny()
    cond = model.encode({"text": TEXTS, "style": STYLES})
    base = Guidance(scales={"text": 1.0, "style": 1.0})
    strong = base.with_scales(text=5.0)
    assert not torch.equal(
        sample_codec_lm(model, cond, 8, base, gen(2)), sample_codec_lm(model, cond, 8, strong, gen(2))
    )
    bos = torch.full((3, K), model.bos_id)
    with torch.no_grad():
        lp_base = guided_lm_step(model, cond, base)(bos)
        lp_strong = guided_lm_step(model, cond, strong)(bos)
        u00, ut0 = (
            model(bos[:, :, None], cond, keep_of(3, kept))[:, :, 0].log_softmax(-1) for kept in (set(), {"text"})
        )
    # nested: changing s_t from 1 to 5 adds 4 (u_t0 - u_00)
    torch.testing.assert_close(lp_strong - lp_base, 4.0 * (ut0 - u00), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="lacks"):
        guided_lm_step(model, cond, Guidance(scales={"speaker": 2.0}))


def test_model_module_imports_neither_guidance_nor_sampling():
    """Models know nothing of guidance or sampling; guided generation lives in sampling.tokens."""
    import ast
    import inspect

    import audioguide.models.codec_lm as module

    imported = set()
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    banned = [m for m in imported if m.split(".")[:2] in (["audioguide", "guidance"], ["audioguide", "sampling"])]
    assert not banned, banned
    assert not hasattr(CodecLM, "generate") and not hasattr(CodecLM, "guided_step")


# ---------------------------------------------------------------------------------------------
# Training


def test_delayed_io_layout():
    codes = torch.arange(2 * 2 * 3).view(2, 2, 3) % 5
    mask = torch.tensor([[True, True, True], [True, True, False]])
    inputs, targets, valid = delayed_io(codes, bos_id=5, pad_id=6, mask=mask)
    assert torch.equal(targets[0], apply_delay_pattern(codes, 6)[0])
    assert torch.equal(inputs[:, :, 0], torch.full((2, 2), 5)) and torch.equal(inputs[:, :, 1:], targets[:, :, :-1])
    assert valid[0].sum() == 6 and valid[1].sum() == 4
    assert torch.equal(valid, targets != 6)


def test_padded_frames_do_not_change_the_loss():
    model = tiny(names=("text",))
    cond = model.encode({"text": ["ab", "c"]})
    keep = {"text": torch.tensor([True, False])}
    codes = torch.randint(0, V, (2, K, 6), generator=gen(4))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    other = codes.clone()
    other[1, :, 4:] = torch.randint(0, V, (K, 2), generator=gen(5))
    with torch.no_grad():
        l1, logs = codec_lm_loss(model, codes, cond, keep, mask)
        l2, _ = codec_lm_loss(model, other, cond, keep, mask)
        # a lone padded row scores like the row cut to its real length
        row_cond, row_keep = {k: v[1:] for k, v in cond.items()}, {"text": keep["text"][1:]}
        lp, _ = codec_lm_loss(model, codes[1:], row_cond, row_keep, mask[1:])
        lt, _ = codec_lm_loss(model, codes[1:, :, :4], row_cond, row_keep)
    assert torch.allclose(l1, l2) and torch.allclose(lp, lt, atol=1e-6)
    assert set(logs) == {"loss"} | {f"ce/{k}" for k in range(K)} | {f"acc/{k}" for k in range(K)}


def pattern(ids: torch.Tensor, T: int) -> torch.Tensor:
    """Codes that are a deterministic function of the condition id: ``[B, K, T]``."""
    t = torch.arange(T)
    k = torch.arange(K)[:, None]
    return (ids[:, None, None] * (t + 1) + 5 * k + ids[:, None, None] ** 2) % V


def test_training_learns_a_conditional_pattern():
    model = tiny(names=("text",), seed=1, depth=2, dim=32).train()
    letters = ["a", "b", "c", "d"]
    ids, T = torch.arange(4), 6
    codes, cond = pattern(ids, T), model.encode({"text": letters})
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = gen(0)
    losses = []
    for _ in range(100):
        keep = draw_keep(["text"], {"text": 0.1}, 4, g)
        loss, _ = codec_lm_loss(model, codes, model.encode({"text": letters}), keep)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    model.eval()
    out = sample_codec_lm(model, cond, T, Guidance(scales={"text": 1.5}), None, temperature=0.0)
    assert (out == codes).float().mean() > 0.8  # chance is 1 / 12


# ---------------------------------------------------------------------------------------------
# Frame-aligned content (aligned = "text")


def aligned_lm(seed: int = 0) -> CodecLM:
    return tiny(names=("text", "style"), seed=seed, aligned="text", encoder_depth=1)


def with_durations(model: CodecLM, texts, durations) -> dict[str, torch.Tensor]:
    cond = model.encode({"text": texts, "style": STYLES[: len(texts)]})
    width = cond["text"].shape[1]
    d = torch.zeros(len(texts), width, dtype=torch.long)
    for b, row in enumerate(durations):
        d[b, : len(row)] = torch.tensor(row)
    cond["text.durations"] = d
    return cond


def test_aligned_config_and_missing_durations_are_errors():
    with pytest.raises(ValueError, match="not a condition"):
        tiny(names=("style",), aligned="text")
    with pytest.raises(ValueError, match="prefix"):
        tiny(names=("text",), aligned="text")
    model = aligned_lm()
    cond = model.encode({"text": TEXTS[:1], "style": STYLES[:1]})
    with pytest.raises(ValueError, match="text.durations"):
        model(random_delayed(model, 1, 4), cond, {})
    with pytest.raises(ValueError, match="text.durations"):
        model.prefill(cond, {})


def test_aligned_kv_cache_matches_full_forward_with_dropped_rows():
    model = aligned_lm()
    cond = with_durations(model, TEXTS, [[2] * 11, [3, 3], [1] * 22])  # 22, 6 and 22 frames
    keep = {"text": torch.tensor([True, False, True]), "style": torch.tensor([True, True, False])}
    frames = int(cond["text.durations"].sum(1).max())
    codes_in = random_delayed(model, 3, frames + K - 1)
    with torch.no_grad():
        full = model(codes_in, cond, keep)
        cached = cached_logits(model, codes_in, cond, keep)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)


def test_aligned_content_is_causal_in_frames_and_a_dropped_row_ignores_it():
    """Without encoder blocks (which let tokens see each other), a token aligned to frames >= f
    changes no logit before step f; a dropped row sees no text, whatever its durations."""
    model = tiny(names=("text", "style"), seed=2, aligned="text", encoder_depth=0)
    a = with_durations(model, ["abc"], [[2, 2, 3]])  # the 'c' covers frames 4..6
    b = with_durations(model, ["abz"], [[2, 2, 3]])
    codes_in = random_delayed(model, 1, 7 + K - 1)
    with torch.no_grad():
        la, lb = model(codes_in, a, {}), model(codes_in, b, {})
        torch.testing.assert_close(la[:, :, :4], lb[:, :, :4])
        assert not torch.allclose(la[:, :, 4:], lb[:, :, 4:])
        dropped = {"text": torch.tensor([False])}
        torch.testing.assert_close(model(codes_in, a, dropped), model(codes_in, b, dropped))
        longer = with_durations(model, ["abc"], [[1, 1, 9]])
        torch.testing.assert_close(model(codes_in, longer, dropped), model(codes_in, a, dropped))


def test_aligned_guided_sampling_follows_the_durations_and_is_reproducible():
    model = aligned_lm(seed=4)
    cond = model.encode({"text": TEXTS[:2], "style": STYLES[:2]})
    durations = model.predict_durations(cond, frames=12)
    assert durations.shape == cond["text.mask"].shape and (durations[cond["text.mask"] == 0] == 0).all()
    cond["text.durations"] = durations.clamp_min(1) * cond["text.mask"].long()
    policy = Guidance(scales={"text": 2.0, "style": 1.5})
    n = int(cond["text.durations"].sum(1).max())
    one = sample_codec_lm(model, cond, n, policy, gen(7), temperature=1.0, top_k=5)
    two = sample_codec_lm(model, cond, n, policy, gen(7), temperature=1.0, top_k=5)
    assert one.shape == (2, K, n) and torch.equal(one, two)
    assert int(one.min()) >= 0 and int(one.max()) < V


def test_aligned_duration_predictor_trains_on_kept_rows_only():
    model = aligned_lm(seed=5).train()
    durations = [[4] * 11, [1, 9], [2] * 22]
    dropped = {"text": torch.tensor([False, False, False])}
    loss = model.aligned_losses(with_durations(model, TEXTS, durations), dropped)["duration"]
    assert loss.item() == 0.0  # every row dropped: nothing to learn from
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    with torch.random.fork_rng():  # the predictor's nn.Dropout draws from the global RNG
        torch.manual_seed(0)
        for _ in range(60):
            loss = model.aligned_losses(with_durations(model, TEXTS, durations), {})["duration"]
            first = loss.item() if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert loss.item() < 0.2 * first
    model.eval()
    predicted = model.predict_durations(with_durations(model, TEXTS, durations))
    # 11 tokens of 4 frames (untrained: 1 frame in all); over dropout seeds 0-9 the sum lies in 39-50
    assert int(predicted[0, :11].sum()) in range(37, 52)


def test_input_dropout_hides_inputs_reproducibly_but_never_the_targets():
    model = tiny(seed=6)
    cond = model.encode({"text": TEXTS, "style": STYLES})
    codes = torch.randint(0, V, (3, K, 9), generator=gen(2))
    seen = []
    original = model.forward

    def spy(codes_in, cond, keep):
        seen.append(codes_in.clone())
        return original(codes_in, cond, keep)

    model.forward = spy
    with torch.no_grad():
        plain, _ = codec_lm_loss(model, codes, cond, {})
        a, logs = codec_lm_loss(model, codes, cond, {}, input_dropout=0.5, generator=gen(3))
        b, _ = codec_lm_loss(model, codes, cond, {}, input_dropout=0.5, generator=gen(3))
    clean, dropped = seen[0], seen[1]
    hidden = dropped != clean
    assert torch.equal(dropped, seen[2]) and a == b  # the same generator, the same inputs
    assert (dropped[hidden] == model.pad_id).all() and (dropped[:, :, 0] == model.bos_id).all()
    assert 0.3 < hidden.float().mean() < 0.7 and a != plain and set(logs) >= {"loss", "ce/0", "acc/0"}
    with pytest.raises(ValueError, match="Generator"):
        codec_lm_loss(model, codes, cond, {}, input_dropout=0.2)
    with pytest.raises(ValueError, match="input_dropout"):
        codec_lm_loss(model, codes, cond, {}, input_dropout=1.0, generator=gen(0))


def test_content_prior_learns_codes_from_phonemes_alone_on_kept_rows():
    """The content prior (prior_codebooks) predicts each frame's first codes from the duration-
    expanded phonemes only: it fits a code sequence determined by the phonemes, ignores dropped
    rows and padded frames, and is checked against its configuration."""
    model = tiny(names=("text", "style"), seed=9, aligned="text", encoder_depth=1, prior_codebooks=2).train()
    durations = [[3] * 11, [5, 7], [2] * 22]
    T = 44
    # every frame's code is a function of its character: what the prior must find
    codes = torch.zeros(3, K, T, dtype=torch.long)
    for b, (text, row) in enumerate(zip(TEXTS, durations)):
        frame_chars = [c for c, d in zip(text, row) for _ in range(d)]
        for t, c in enumerate(frame_chars):
            codes[b, :, t] = (ord(c) * (1 + torch.arange(K))) % V
    mask = torch.zeros(3, T, dtype=torch.bool)
    for b, row in enumerate(durations):
        mask[b, : sum(row)] = True
    cond = with_durations(model, TEXTS, durations)
    losses = model.aligned_losses(cond, {}, codes, mask)
    assert set(losses) == {"duration", "prior"} and 0 < losses["prior"].item()
    assert "prior" not in model.aligned_losses(cond, {})  # no codes, no prior loss
    # padded frames and dropped rows do not count
    noisy = codes.clone()
    noisy[~mask[:, None].expand_as(noisy)] = 0
    assert torch.allclose(model.aligned_losses(cond, {}, noisy, mask)["prior"], losses["prior"])
    dropped = {"text": torch.tensor([True, False, True])}
    other = codes.clone()
    other[1] = (other[1] + 3) % V
    assert torch.allclose(model.aligned_losses(cond, dropped, other, mask)["prior"], model.aligned_losses(cond, dropped, codes, mask)["prior"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        first = losses["prior"].item()
        for _ in range(80):
            loss = model.aligned_losses(with_durations(model, TEXTS, durations), {}, codes, mask)["prior"]
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert loss.item() < 0.1 * first
    with pytest.raises(ValueError, match="prior_codebooks"):
        CodecLMConfig(prior_codebooks=1)  # not aligned
    with pytest.raises(ValueError, match="prior_codebooks"):
        tiny(aligned="text", prior_codebooks=K + 1)


def test_content_prior_log_probs_match_its_training_loss():
    """``content_prior`` gives normalised log-probs per frame whose cross-entropy on the codes is
    the prior loss ``aligned_losses`` trains; a model without a prior says so."""
    model = tiny(seed=4, aligned="text", encoder_depth=1, prior_codebooks=2)
    durations = [[3] * 11, [5, 7], [2] * 22]
    T = 44
    cond = with_durations(model, TEXTS, durations)
    codes = torch.randint(0, V, (3, K, T), generator=gen(2))
    mask = torch.zeros(3, T, dtype=torch.bool)
    for b, row in enumerate(durations):
        mask[b, : sum(row)] = True
    log_p = model.content_prior(cond, T)
    assert log_p.shape == (3, 2, T, V)
    assert torch.allclose(log_p.logsumexp(-1), torch.zeros(3, 2, T), atol=1e-5)
    nll = -log_p.gather(-1, codes[:, :2, :, None]).squeeze(-1)  # [B, 2, T]
    with torch.no_grad():
        loss = model.aligned_losses(cond, {}, codes, mask)["prior"]
    assert torch.allclose(nll.permute(0, 2, 1)[mask].mean(), loss, atol=1e-5)
    with pytest.raises(ValueError, match="no content prior"):
        tiny(aligned="text").content_prior(cond, T)


def test_fuse_prior_adds_the_weighted_prior_at_each_codebooks_delayed_frame():
    B, n, T, w = 2, 2, 5, 0.7
    log_prior = torch.randn(B, n, T, V, generator=gen(3))
    base = torch.randn(T + K - 1, B, K, V, generator=gen(4))
    calls = iter(range(T + K - 1))
    fused = fuse_prior(lambda prev: base[next(calls)], log_prior, w)
    for s in range(T + K - 1):
        out = fused(torch.zeros(B, K, dtype=torch.long))
        for k in range(K):
            expected = base[s, :, k] + (w * log_prior[:, k, s - k] if k < n and 0 <= s - k < T else 0.0)
            assert torch.allclose(out[:, k], expected)
    assert torch.equal(base[0], torch.randn(T + K - 1, B, K, V, generator=gen(4))[0])  # the step's output is not edited in place
    with pytest.raises(ValueError, match="prior weight"):
        fuse_prior(lambda prev: prev, log_prior, -1.0)
    with pytest.raises(ValueError, match="shape"):
        fuse_prior(lambda prev: prev, log_prior[0], 1.0)


def test_sampling_with_a_dominant_prior_follows_it_and_weight_zero_changes_nothing():
    model = tiny(seed=5, aligned="text", encoder_depth=1, prior_codebooks=2)
    durations = [[3] * 11, [5, 7], [2] * 22]
    T = 44
    cond = with_durations(model, TEXTS, durations)
    policy = Guidance(scales={"text": 2.0})
    plain = sample_codec_lm(model, cond, T, policy, gen(1), temperature=0.9, top_k=6)
    assert torch.equal(sample_codec_lm(model, cond, T, policy, gen(1), temperature=0.9, top_k=6, prior_weight=0.0), plain)
    greedy = sample_codec_lm(model, cond, T, policy, None, temperature=0.0, prior_weight=1e4)
    assert torch.equal(greedy[:, :2], model.content_prior(cond, T).argmax(-1))
    assert not torch.equal(greedy[:, :2], sample_codec_lm(model, cond, T, policy, None, temperature=0.0)[:, :2])
    with pytest.raises(ValueError, match="content prior"):
        sample_codec_lm(tiny(seed=5, aligned="text", encoder_depth=1), cond, T, policy, None, temperature=0.0, prior_weight=1.0)
