"""The Diffusion Transformer: shapes, masking, null conditions, attention paths, adaLN-Zero, guidance."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from audioguide.conditioners import Characters
from audioguide.conditioners.characters import CharactersConfig
from audioguide.guidance import Guidance, GuidedField
from audioguide.models.dit import DiT, DiTConfig, attention, math_attention

C, T = 3, 7
TEXTS = ["ab", "hello there"]
SPEAKERS = ["spk-1", "s2"]


def make(seed: int = 0, wake: bool = True, **overrides) -> DiT:
    """A tiny DiT with two conditions; ``wake`` randomises the zero-initialised adaLN-Zero weights."""
    config = DiTConfig(**({"dim": 16, "depth": 2, "heads": 2, "seed": seed} | overrides))
    conditioners = {"text": Characters(CharactersConfig(dim=8)), "speaker": Characters(CharactersConfig(dim=6))}
    model = DiT(config, C, conditioners)
    if wake:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for _, p in sorted(model.named_parameters()):
                if bool((p == 0).all()):
                    p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def inputs(model: DiT, seed: int = 1, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        cond = model.encode({"text": TEXTS, "speaker": SPEAKERS})
    cond = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in cond.items()}
    x = torch.randn(2, C, T, generator=g, dtype=dtype)
    t = torch.rand(2, generator=g, dtype=dtype)
    keep = {"text": torch.tensor([True, True]), "speaker": torch.tensor([True, True])}
    return x, t, cond, keep


MODES = [
    {"cond_mode": "cross"},
    {"cond_mode": "prefix"},
    {"cond_mode": "cross", "rope": False, "qk_norm": False, "pool": False},
    {"cond_mode": "prefix", "mean_flow": True},
]


@pytest.mark.parametrize("overrides", MODES)
def test_output_shape(overrides):
    model = make(**overrides)
    x, t, cond, keep = inputs(model)
    with torch.no_grad():
        assert model(x, t, cond, keep).shape == (2, C, T)


@pytest.mark.parametrize("overrides", MODES)
def test_padded_frames_and_tokens_do_not_influence_valid_outputs(overrides):
    model = make(**overrides)
    x, t, cond, keep = inputs(model)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, T - 3 :] = False
    g = torch.Generator().manual_seed(5)
    x2 = x.clone()
    x2[1, :, T - 3 :] = 10 * torch.randn(C, 3, generator=g)
    cond2 = dict(cond)
    text = cond["text"].clone()
    text[~cond["text.mask"]] = 10 * torch.randn(int((~cond["text.mask"]).sum()), 8, generator=g)
    cond2["text"] = text
    with torch.no_grad():
        a = model(x, t, cond, keep, mask=mask)
        b = model(x2, t, cond2, keep, mask=mask)
        c = model(x[1:, :, : T - 3], t[1:], {k: v[1:] for k, v in cond.items()}, {k: v[1:] for k, v in keep.items()})
    assert torch.allclose(a[0], b[0], atol=1e-5)
    assert torch.allclose(a[1, :, : T - 3], b[1, :, : T - 3], atol=1e-5)
    # and a padded row equals the same row run alone without padding
    assert torch.allclose(a[1:, :, : T - 3], c, atol=1e-5)


@pytest.mark.parametrize("mode", ["cross", "prefix"])
def test_dropped_rows_see_the_null_condition(mode):
    model = make(cond_mode=mode)
    x, t, cond, keep = inputs(model)
    keep = {"text": torch.tensor([True, False]), "speaker": torch.tensor([False, True])}
    with torch.no_grad():
        out = model(x, t, cond, keep)
        text_null = model.conditioners["text"].null.view(1, 1, -1)
        speaker_null = model.conditioners["speaker"].null.view(1, 1, -1)
        one = torch.ones(1, 1, dtype=torch.bool)
        # row 1 with the text null as its only text token, real speaker
        speaker1 = {"speaker": cond["speaker"][1:], "speaker.mask": cond["speaker.mask"][1:]}
        row1 = model(x[1:], t[1:], {"text": text_null, "text.mask": one} | speaker1, {})
        text0 = {"text": cond["text"][:1], "text.mask": cond["text.mask"][:1]}
        row0 = model(x[:1], t[:1], text0 | {"speaker": speaker_null, "speaker.mask": one}, {})
    assert torch.allclose(out[1:], row1, atol=1e-5)
    assert torch.allclose(out[:1], row0, atol=1e-5)


@pytest.mark.parametrize("overrides", MODES)
def test_sdpa_and_math_attention_agree(overrides):
    model = make(**overrides)
    x, t, cond, keep = inputs(model)
    mask = torch.tensor([[True] * T, [True] * (T - 2) + [False] * 2])
    with torch.no_grad():
        fused = model(x, t, cond, keep, mask=mask)
        with math_attention(model):
            explicit = model(x, t, cond, keep, mask=mask)
    assert torch.allclose(fused, explicit, atol=1e-5)
    assert not any(getattr(m, "math", False) for m in model.modules())  # restored


def test_attention_function_masks_keys_and_never_nans():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 2, 4, 8, generator=g) for _ in range(3))
    mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    for use_math in (False, True):
        out = attention(q, k, v, mask, math=use_math)
        assert torch.isfinite(out).all()
        ref = torch.softmax(q[0] @ k[0, :, :2].transpose(-1, -2) / 8**0.5, -1) @ v[0, :, :2]
        assert torch.allclose(out[0], ref, atol=1e-5)


def test_adaln_zero_initial_output_is_exactly_zero():
    model = make(wake=False, cond_mode="cross", mean_flow=True)
    x, t, cond, keep = inputs(model)
    with torch.no_grad():
        out = model(x, t, cond, keep, r=t / 2)
    assert torch.equal(out, torch.zeros_like(out))
    block = model.blocks[0]
    assert torch.equal(block.ada[-1].weight, torch.zeros_like(block.ada[-1].weight))


def test_mean_flow_r_defaults_to_t_and_matters():
    model = make(mean_flow=True)
    x, t, cond, keep = inputs(model)
    with torch.no_grad():
        assert torch.equal(model(x, t, cond, keep), model(x, t, cond, keep, r=t))
        assert not torch.allclose(model(x, t, cond, keep), model(x, t, cond, keep, r=t / 2))


@pytest.mark.parametrize("mode", ["cross", "prefix"])
def test_guided_batched_forward_equals_branches(mode):
    model = make(cond_mode=mode)
    x, t, cond, _ = inputs(model)
    mask = torch.tensor([[True] * T, [True] * (T - 2) + [False] * 2])
    s_text, s_speaker = 2.5, 1.5
    field = GuidedField(model, cond, Guidance(scales={"text": s_text, "speaker": s_speaker}))

    def branch(kept: set[str]) -> torch.Tensor:
        keep = {n: torch.full((2,), n in kept) for n in ("text", "speaker")}
        return model(x, t, cond, keep, mask=mask)

    with torch.no_grad():
        guided = field(x, t, mask=mask)
        u0, u1, u2 = branch(set()), branch({"text"}), branch({"text", "speaker"})
    expected = u0 + s_text * (u1 - u0) + s_speaker * (u2 - u1)
    assert torch.allclose(guided, expected, atol=1e-4)


def test_init_is_reproducible_from_seed():
    a, b, c = make(seed=3, wake=False), make(seed=3, wake=False), make(seed=4, wake=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


def test_works_without_conditioners_and_in_float64():
    model = DiT(DiTConfig(dim=16, heads=2, depth=1), 2, {}).double()
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        out = model(x, torch.full((3,), 0.5, dtype=torch.float64), {}, {})
    assert out.dtype == torch.float64 and out.shape == x.shape


@pytest.mark.parametrize(
    "bad",
    [
        {"dim": 0},
        {"dim": 10, "heads": 3},
        {"dim": 6, "heads": 2},  # odd head width
        {"kind": "score"},
        {"cond_mode": "film"},
        {"mlp_ratio": 0.0},
        {"kind": "eps", "mean_flow": True},
    ],
)
def test_config_validation(bad):
    with pytest.raises(ValueError):
        DiTConfig(**bad)


def test_config_fields_are_toml_friendly():
    for f in dataclasses.fields(DiTConfig):
        value = getattr(DiTConfig(), f.name)
        if isinstance(value, tuple):  # a TOML array of scalars
            assert all(isinstance(v, (int, float, str, bool)) for v in value)
        else:
            assert isinstance(value, (int, float, str, bool))


def test_token_blocks_do_not_depend_on_batch_padding():
    """A row's FFT-block states are the same alone and padded in a batch (any amount of padding):
    what a model learned on padded batches is what it computes for one sentence at inference."""
    from audioguide.models.aligned import TokenBlock, token_blocks

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    blocks = torch.nn.ModuleList([TokenBlock(16, 2, False) for _ in range(2)])
    h = torch.randn(1, 7, 16, generator=g)
    alone = token_blocks(blocks, h, torch.ones(1, 7, dtype=torch.bool), 2)
    for pad in (1, 4):
        padded = torch.cat([h, torch.randn(1, pad, 16, generator=g)], dim=1)
        mask = torch.arange(7 + pad)[None] < 7
        assert torch.allclose(token_blocks(blocks, padded, mask, 2)[:, :7], alone, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Per-row perturbations (PAG's identity attention, STG's skipped blocks); guidance decides
# --------------------------------------------------------------------------------------------


def test_identity_attention_map_outputs_the_values():
    """PAG's perturbed self-attention (Ahn et al. 2024): softmax(Q K^T / sqrt d) -> I, so the layer is to_out(to_v(x))."""
    from audioguide.models.layers import Attention

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    attn = Attention(8, 2, qk_norm=True)
    x = torch.randn(3, 5, 8, generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    flags = torch.tensor([False, True, False])
    with torch.no_grad():
        out = attn(x, x, mask, identity=flags)
        plain = attn(x, x, mask)
        assert torch.allclose(out[1], attn.to_out(attn.to_v(x[1])), atol=1e-6)
        assert torch.equal(out[[0, 2]], plain[[0, 2]])
        assert torch.equal(attn(x, x, mask, identity=torch.zeros(3, dtype=torch.bool)), plain)


@pytest.mark.parametrize("overrides", MODES)
def test_no_perturbation_is_bit_identical(overrides):
    model = make(**overrides)
    x, t, cond, keep = inputs(model)
    off = {"attention": torch.zeros(2, 2, dtype=torch.bool), "skip": torch.zeros(2, 2, dtype=torch.bool)}
    with torch.no_grad():
        assert torch.equal(model(x, t, cond, keep, perturb=off), model(x, t, cond, keep))
        assert torch.equal(model(x, t, cond, keep, perturb={}), model(x, t, cond, keep))
    assert model.perturbable == {"attention": 2, "skip": 2} == DiT.perturbations(model.config)


@pytest.mark.parametrize("overrides", MODES)
def test_a_skipped_block_is_the_model_without_it_on_that_row_only(overrides):
    import copy

    model = make(**overrides)
    x, t, cond, keep = inputs(model)
    skip = torch.tensor([[False, False], [True, False]])
    without = copy.deepcopy(model)
    without.blocks = torch.nn.ModuleList([model.blocks[1]])
    with torch.no_grad():
        out = model(x, t, cond, keep, perturb={"skip": skip})
        plain = model(x, t, cond, keep)
        alone = without(x[1:], t[1:], {k: v[1:] for k, v in cond.items()}, {k: v[1:] for k, v in keep.items()})
    assert torch.allclose(out[0], plain[0], atol=1e-6)
    assert torch.allclose(out[1], alone[0], atol=1e-5) and not torch.allclose(out[1], plain[1], atol=1e-3)


def test_identity_attention_rows_batched_equal_alone():
    model = make()
    x, t, cond, keep = inputs(model)
    flags = torch.tensor([[False, True], [True, True]])
    with torch.no_grad():
        out = model(x, t, cond, keep, perturb={"attention": flags})
        for b in range(2):
            row = model(x[b : b + 1], t[b : b + 1], {k: v[b : b + 1] for k, v in cond.items()},
                        {k: v[b : b + 1] for k, v in keep.items()}, perturb={"attention": flags[b : b + 1]})
            assert torch.allclose(out[b], row[0], atol=1e-5)
        assert not torch.allclose(out, model(x, t, cond, keep), atol=1e-3)
    with pytest.raises(ValueError, match="perturb names 'dropout'; this DiT perturbs attention, skip"):
        model(x, t, cond, keep, perturb={"dropout": flags})
    with pytest.raises(ValueError, match=r"perturb\['skip'\] must be bool \[2, 2\]"):
        model(x, t, cond, keep, perturb={"skip": flags[:, :1]})


@pytest.mark.parametrize("mean_flow", [False, True])
def test_pag_and_cfg_in_one_batched_forward_equal_branches(mean_flow):
    """PAG + CFG on the DiT: ``u + w (c - u) + (w_pag - 1)(c - c^)``; the guided field's one batched
    forward (a padded row, mean-flow ``r`` included) equals the branches run one by one."""
    from audioguide.guidance import PAG, STG

    model = make(cond_mode="cross", mean_flow=mean_flow)
    x, t, cond, _ = inputs(model)
    mask = torch.tensor([[True] * T, [True] * (T - 2) + [False] * 2])
    extra = {"mask": mask, **({"r": t / 2} if mean_flow else {})}
    policy = Guidance(scales={"text": 2.5, "speaker": 1.0}, pag=PAG(1.7, (1,)), stg=STG(1.3, (0,)))
    field = GuidedField(model, cond, policy)

    def branch(kept: set[str], perturb=None) -> torch.Tensor:
        keep = {n: torch.full((2,), n in kept) for n in ("text", "speaker")}
        return model(x, t, cond, keep, perturb=perturb, **extra)

    layer = lambda i: torch.tensor([[i == 0, i == 1]] * 2)  # noqa: E731
    with torch.no_grad():
        guided = field(x, t, **extra)
        c, u0, u1 = branch({"text", "speaker"}), branch(set()), branch({"text"})
        pag, stg = branch({"text", "speaker"}, {"attention": layer(1)}), branch({"text", "speaker"}, {"skip": layer(0)})
    assert field.rows_evaluated == 5 * 2
    expected = u0 + 2.5 * (u1 - u0) + (c - u1) + 0.7 * (c - pag) + 0.3 * (c - stg)
    assert torch.allclose(guided, expected, atol=1e-4)
