"""The Python API end to end on tiny random recipes: reproducibility, overrides, every sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioguide import Pipeline
from audioguide.checkpoints import save_checkpoint
from audioguide.core import AudioguideError
from audioguide.recipes import load_recipe
from tests.conftest import TINY_TTS


@pytest.fixture
def tiny(write_recipe):
    return Pipeline.from_recipe(write_recipe(TINY_TTS))


def test_same_seed_is_bit_identical_and_seeds_differ(tiny):
    a = tiny("Hello world.", seed=3)
    b = tiny("Hello world.", seed=3)
    c = tiny("Hello world.", seed=4)
    assert a.sample_rate == 8000 and a[0].dtype == np.float32
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])


def test_batch_item_i_equals_single_call_with_seed_plus_i(tiny):
    texts = ["One.", "Two words.", "And a third, longer sentence."]
    batch = tiny(texts, seed=10)
    for i, text in enumerate(texts):
        assert np.array_equal(batch[i], tiny(text, seed=10 + i)[0])


def test_speech_length_follows_text(tiny):
    short, long = tiny(["Hi there.", "A much longer sentence than the first one, with more words."])
    assert len(long) > len(short)
    d = tiny.recipe.duration
    assert len(short) == round(max(len("Hi there.") * d.seconds_per_char, d.min_seconds) * 8000)


def test_overrides_change_the_output_and_are_validated(tiny):
    base = tiny("Guidance matters.", seed=0)[0]
    for kwargs in ({"cfg": 1.0}, {"scales": {"text": 6.0}}, {"rescale": 0.7}, {"steps": 2}):
        assert not np.array_equal(base, tiny("Guidance matters.", seed=0, **kwargs)[0]), kwargs
    # cfg=3 equals the recipe's own scale of 3: overriding with the same value changes nothing
    assert np.array_equal(base, tiny("Guidance matters.", seed=0, cfg=3.0)[0])
    with pytest.raises(AudioguideError, match="no guidance scale named 'speaker'"):
        tiny("x", scales={"speaker": 2.0})
    with pytest.raises(AudioguideError, match="rescale phi"):
        tiny("x", rescale=-0.1)
    with pytest.raises(AudioguideError, match="steps must be >= 1"):
        tiny("x", steps=0)
    with pytest.raises(AudioguideError, match="text is empty"):
        tiny("   ")
    with pytest.raises(AudioguideError, match="no texts"):
        tiny([])


def test_per_call_override_does_not_leak_into_next_call(tiny):
    first = tiny("Same text.", seed=1)[0]
    tiny("Same text.", seed=1, scales={"text": 9.0}, rescale=0.5, steps=2)
    assert np.array_equal(first, tiny("Same text.", seed=1)[0])
    assert dict(tiny.recipe.guidance.scales) == {"text": 3.0}


@pytest.mark.parametrize(
    "sampler,model_extra,scale",
    [
        ("heun", "", 3.0),
        ("midpoint", "", 3.0),
        ("euler-cfgpp", "", 0.6),
        ("ddim", 'kind = "v"', 3.0),
        ("dpmpp-2m", 'kind = "v"', 3.0),
        ("ddim-cfgpp", 'kind = "v"', 0.5),
        ("meanflow", "mean_flow = true", 1.0),
    ],
)
def test_every_sampler_runs_through_a_recipe(write_recipe, sampler, model_extra, scale):
    text = (
        TINY_TTS.replace('type = "euler"', f'type = "{sampler}"')
        .replace("hidden = 32", f"hidden = 32\n{model_extra}")
        .replace("text = 3.0", f"text = {scale}")
    )
    if sampler == "meanflow":
        text = text.replace("steps = 4", "steps = 2")
    pipe = Pipeline.from_recipe(write_recipe(text))
    a, b = pipe("Every sampler.", seed=5)[0], pipe("Every sampler.", seed=5)[0]
    assert np.isfinite(a).all() and a.std() > 0 and np.array_equal(a, b)


def test_t2a_seconds(write_recipe):
    text = TINY_TTS.replace('task = "tts"', 'task = "t2a"').replace("conditioners.text", "conditioners.caption")
    text = text.replace("scales = { text = 3.0 }", "scales = { caption = 3.0 }")
    pipe = Pipeline.from_recipe(write_recipe(text))
    assert len(pipe("a dog barking", seconds=1.5)[0]) == 12000
    assert len(pipe("a dog barking")[0]) == 4 * 8000  # the recipe default
    with pytest.raises(AudioguideError, match=r"seconds must be in \[0.5, 30\]"):
        pipe("a dog barking", seconds=60.0)


def test_weights_load_from_a_checkpoint_and_must_fit(write_recipe, tmp_path):
    pipe = Pipeline.from_recipe(write_recipe(TINY_TTS))
    state = {k: v + 0.01 for k, v in pipe.model.state_dict().items()}
    ckpt = save_checkpoint(tmp_path / "w.safetensors", state, {"hidden": 32}, "toy-flow")
    loaded = Pipeline.from_recipe(write_recipe(TINY_TTS), weights=str(ckpt))
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in state.items())
    assert not np.array_equal(loaded("Weights.", seed=0)[0], pipe("Weights.", seed=0)[0])
    # weights named in the recipe resolve relative to the recipe file
    named = Pipeline.from_recipe(write_recipe(TINY_TTS.replace('hidden = 32', 'hidden = 32\nweights = "w.safetensors"'), "n.toml"))
    assert np.array_equal(named("Weights.", seed=0)[0], loaded("Weights.", seed=0)[0])
    wrong = save_checkpoint(tmp_path / "x.safetensors", {"nope": torch.zeros(1)}, {}, "toy-flow")
    with pytest.raises(AudioguideError, match="does not fit the model of recipe 'tiny'"):
        Pipeline.from_recipe(write_recipe(TINY_TTS), weights=str(wrong))


def test_recipe_without_weights_must_say_random(write_recipe):
    with pytest.raises(AudioguideError, match="has no weights and random_weights is not set"):
        Pipeline.from_recipe(write_recipe(TINY_TTS.replace("random_weights = true", "")))


def test_builtin_random_recipes_generate():
    for name in ("random-tts", "random-t2a", "random-tts-meanflow"):
        recipe = load_recipe(name)
        audio = Pipeline.from_recipe(recipe)("A short test.", seed=0, seconds=None)
        assert audio[0].size > 0 and np.isfinite(audio[0]).all()


def _tiny_t2a(write_recipe, scale: float = 3.0):
    text = TINY_TTS.replace('task = "tts"', 'task = "t2a"').replace("conditioners.text", "conditioners.caption")
    return Pipeline.from_recipe(write_recipe(text.replace("scales = { text = 3.0 }", f"scales = {{ caption = {scale} }}")))


def test_negative_prompt_replaces_the_null_branch(write_recipe):
    pipe = _tiny_t2a(write_recipe)
    plain = pipe("a dog barking", seed=1)[0]
    neg = pipe("a dog barking", seed=1, negative="rain on a roof, loud")[0]  # longer than the prompt: padded
    assert not np.array_equal(plain, neg) and np.isfinite(neg).all()
    assert np.array_equal(neg, pipe("a dog barking", seed=1, negative="rain on a roof, loud")[0])
    # with guidance off on the caption (scale 1) a negative prompt could do nothing: refused, not ignored
    with pytest.raises(AudioguideError, match="negative prompt acts through guidance.*scale is 1"):
        _tiny_t2a(write_recipe, scale=1.0)("a dog barking", seed=1, negative="rain")
    with pytest.raises(AudioguideError, match="scale is 1"):
        pipe("a dog barking", seed=1, cfg=1.0, negative="rain")
    with pytest.raises(AudioguideError, match="text is empty|empty"):
        pipe("a dog barking", negative="")


def test_prompt_parts_are_composable_diffusion(write_recipe):
    """A prompt in parts (Liu et al. 2022): each part guided at its weight times the caption's scale."""
    pipe = _tiny_t2a(write_recipe)
    plain = pipe("a dog barking", seed=1)[0]
    both = pipe("a dog barking", seed=1, parts=["rain on a roof, loud"])[0]  # longer than the prompt: padded
    assert not np.allclose(plain, both, atol=1e-4) and np.isfinite(both).all()
    assert np.array_equal(both, pipe("a dog barking", seed=1, parts=["rain on a roof, loud"])[0])
    # the prompt as its own part at weights (1, 1): u + 2 w (c - u), plain CFG at twice the scale
    twice = pipe("a dog barking", seed=1, parts=["a dog barking"])[0]
    assert np.allclose(twice, pipe("a dog barking", seed=1, cfg=6.0)[0], atol=1e-4)
    # at weights (1/2, 1/2) it is the prompt alone
    assert np.allclose(pipe("a dog barking", seed=1, parts=["a dog barking"], part_weights=[0.5, 0.5])[0], plain, atol=1e-4)
    # several texts share the parts; a batch is each text alone with seed + i
    texts = ["a dog barking", "a bell"]
    batched = pipe(texts, seed=3, parts=["wind"], part_weights=[1.0, 0.5], batch_size=2)
    for i, text in enumerate(texts):
        alone = pipe(text, seed=3 + i, parts=["wind"], part_weights=[1.0, 0.5])[0]
        assert np.allclose(batched[i], alone, atol=1e-5)


def test_parts_and_negative_pad_to_one_length():
    """Every sequence of a condition (the prompt, its parts, its negative) is padded, masked, to the
    longest, so guidance's branches and a conjunction's parts stack row by row."""
    from audioguide.conditioners.base import Encoded
    from audioguide.models.base import with_negative, with_parts

    pos = Encoded(torch.randn(2, 3, 4), torch.tensor([[True, True, False], [True, True, True]]))
    part = Encoded(torch.randn(1, 6, 4), torch.ones(1, 6, dtype=torch.bool))
    cond = with_parts({"caption": pos.emb, "caption.mask": pos.mask, "other": torch.zeros(2, 1, 4), "other.mask": torch.ones(2, 1, dtype=torch.bool)},
                      "caption", [part])
    cond = with_negative(cond, "caption", Encoded(torch.randn(1, 2, 4), torch.ones(1, 2, dtype=torch.bool)))
    for key in ("caption", "caption.part1", "caption.negative"):
        assert cond[key].shape == (2, 6, 4) and cond[f"{key}.mask"].shape == (2, 6)
    assert torch.equal(cond["caption"][:, :3], pos.emb) and not cond["caption.mask"][:, 3:].any()
    assert torch.equal(cond["caption.part1"][1], part.emb[0]) and cond["caption.part1.mask"].all()
    assert cond["caption.negative.mask"][:, :2].all() and not cond["caption.negative.mask"][:, 2:].any()
    assert cond["other"].shape == (2, 1, 4)  # another condition is left as it is


def test_prompt_parts_errors(write_recipe):
    pipe = _tiny_t2a(write_recipe)
    for kw, match in (({"parts": []}, "parts is empty"), ({"parts": "rain"}, "list of prompts"),
                      ({"parts": ["rain"], "part_weights": [1.0]}, "one weight per part.*2, got 1"),
                      ({"parts": ["rain"], "part_weights": [1.0, 0.0]}, r"in \(0, 4\]"),
                      ({"part_weights": [1.0]}, "part weights need parts"),
                      ({"parts": ["a", "b", "c", "d"]}, "at most 3 parts"),
                      ({"parts": [""]}, "part: .*empty")):
        with pytest.raises(AudioguideError, match=match):
            pipe("a dog barking", **kw)
    with pytest.raises(AudioguideError, match="text-to-audio"):
        Pipeline.from_recipe(write_recipe(TINY_TTS, "tts.toml"))("hello", parts=["there"])


def test_negative_branch_sees_the_negative_prompt_exactly():
    """The dropped rows of ``select`` carry the negative's embedding and mask, kept rows their own."""
    from audioguide.conditioners.base import Encoded
    from audioguide.models.base import with_negative

    pos = Encoded(torch.randn(2, 3, 4), torch.tensor([[True, True, False], [True, True, True]]))
    negative = Encoded(torch.randn(1, 5, 4), torch.ones(1, 5, dtype=torch.bool))
    cond = with_negative({"caption": pos.emb, "caption.mask": pos.mask}, "caption", negative)
    assert cond["caption"].shape == (2, 5, 4) and not cond["caption.mask"][:, 3:].any()
    from audioguide.conditioners.characters import Characters, CharactersConfig

    conditioner = Characters(CharactersConfig(dim=4))
    out = conditioner.select(Encoded(cond["caption"], cond["caption.mask"]), torch.tensor([True, False]),
                             Encoded(cond["caption.negative"], cond["caption.negative.mask"]))
    assert torch.equal(out.emb[0, :3], pos.emb[0]) and torch.equal(out.emb[1], negative.emb[0])
    assert torch.equal(out.mask[1], negative.mask[0]) and torch.equal(out.mask[0, :3], pos.mask[0])
