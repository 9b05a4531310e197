"""Recipes: built-ins load, and every kind of mistake is a one-line error naming file, key and choices."""

from __future__ import annotations

import dataclasses

import pytest

from audioguide.recipes import RecipeError, builtin_names, builtin_recipes, load_recipe
from audioguide.registry import SAMPLERS
from tests.conftest import TINY_TTS


def test_builtin_recipes_load_and_are_frozen():
    recipes = builtin_recipes()
    assert {r.name for r in recipes} == set(builtin_names()) and len(recipes) >= 3
    r = load_recipe("random-tts")
    assert r.task == "tts" and r.condition_names == ("text",) and r.random_weights
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.name = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.sampler.config.steps = 3  # type: ignore[misc]


def test_recipe_from_path(write_recipe):
    r = load_recipe(write_recipe(TINY_TTS))
    assert r.name == "tiny" and r.sampler.config.steps == 4 and dict(r.guidance.scales) == {"text": 3.0}


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize(
    "edit,expect",
    [
        (("hidden = 32", "hiden = 32"), ["[model] (toy-flow): unknown key 'hiden'", "valid keys: hidden, layers"]),
        (('type = "toy-flow"', 'type = "wavenet"'), ["[model].type is 'wavenet'", "valid choices:", "toy-flow"]),
        (('type = "euler"', 'type = "eulr"'), ["[sampler].type is 'eulr'", "ddim", "dpmpp-2m", "heun"]),
        (("steps = 4", "steps = 0"), ["[sampler] (euler): steps must be >= 1"]),
        (("steps = 4", 'steps = "four"'), ["[sampler] (euler).steps must be an integer"]),
        (('task = "tts"', 'task = "music"'), ["task is 'music'", "valid choices: tts, t2a"]),
        (("scales = { text = 3.0 }", "scales = { text = -2.0 }"), ["[guidance]", "must be a finite number >= 0"]),
        (("scales = { text = 3.0 }", "scales = { speaker = 2.0 }"), ["names condition 'speaker'", "conditioners are text"]),
        (("scales = { text = 3.0 }", "scales = { text = 3.0 }\nrescale = 1.5"), ["rescale phi must be in [0, 1]"]),
        (("scales = { text = 3.0 }", "scales = { text = 3.0 }\nrescal = 0.5"), ["[guidance]: unknown key 'rescal'", "rescale"]),
        (('name = "tiny"', 'name = "tiny"\ncolour = "red"'), ["unknown key 'colour'", "valid keys: name, task"]),
        (("[conditioners.text]", "[conditioners.caption]"), ["[conditioners.caption] is not an input of task 'tts'"]),
        (('hop = 64', 'hop = 64\n[duration]\nmin_seconds = 5.0\nmax_seconds = 1.0'), ["[duration]", "min_seconds <= max_seconds"]),
        (("steps = 4", "steps = 4\nshift = 3.0"), ['shift applies only to schedule = "shift"']),
        (('hop = 64', 'hop = 64\n[duration]\nseconds_per_char = nan'), ["seconds_per_char must be a finite number > 0"]),
        (("dim = 16", 'dim = 16\nweights = "x.safetensors"'), ["[conditioners.text]: no 'weights' here", "[model] weights"]),
        (("steps = 4", 'steps = 4\nweights = "x.safetensors"'), ["[sampler]: no 'weights' here"]),
        (("scales = { text = 3.0 }", "scales = { text = 3.0 }\n[[guidance.terms]]\nkeep = []\nweight = 1.0"), ["'terms' needs mode"]),
        (("scales = { text = 3.0 }", "scales = { text = 3.0 }\n[train]\ncurriculum_steps = 10"), ["only to mean-flow models"]),
        (("scales = { text = 3.0 }", 'scales = { text = 3.0 }\n[train]\nt_dist = "uniform"'), []),
    ],
)
def test_bad_recipes_are_one_line_errors(write_recipe, edit, expect):
    old, new = edit
    assert old in TINY_TTS
    path = write_recipe(TINY_TTS.replace(old, new, 1))
    if not expect:  # a valid edit: it must load
        load_recipe(path)
        return
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    msg = _one_line(err)
    assert str(path) in msg
    for part in expect:
        assert part in msg


def test_sampler_must_fit_model_kind(write_recipe):
    path = write_recipe(TINY_TTS.replace('type = "euler"', 'type = "ddim"'))
    with pytest.raises(RecipeError, match="needs a model predicting eps or v or x0"):
        load_recipe(path)
    path = write_recipe(TINY_TTS.replace('type = "euler"', 'type = "meanflow"').replace("steps = 4", "steps = 1"))
    with pytest.raises(RecipeError, match="needs a mean-flow model"):
        load_recipe(path)


def test_cfgpp_scales_live_in_unit_interval(write_recipe):
    path = write_recipe(TINY_TTS.replace('type = "euler"', 'type = "euler-cfgpp"'))
    with pytest.raises(RecipeError, match=r"CFG\+\+ scales live in \[0, 1\]"):
        load_recipe(path)
    ok = write_recipe(TINY_TTS.replace('type = "euler"', 'type = "euler-cfgpp"').replace("text = 3.0", "text = 0.6"))
    assert SAMPLERS[load_recipe(ok).sampler.type].cfgpp


def test_nested_guidance_tables(write_recipe):
    text = TINY_TTS.replace(
        "scales = { text = 3.0 }",
        "scales = { text = 3.0 }\ninterval = [0.1, 0.9]\n[guidance.apg]\neta = 0.5\n[guidance.adaptive]\nthreshold = 0.99",
    )
    g = load_recipe(write_recipe(text)).guidance
    assert g.interval == (0.1, 0.9) and g.apg.eta == 0.5 and g.adaptive.threshold == 0.99
    bad = write_recipe(text.replace("eta = 0.5", "eta = 0.5\nmomentum = 0.5"))
    with pytest.raises(RecipeError, match=r"\[guidance\].apg: apg momentum must be in \(-1, 0\]"):
        load_recipe(bad)


def test_custom_terms(write_recipe):
    text = TINY_TTS.replace(
        "scales = { text = 3.0 }",
        'mode = "terms"\n[[guidance.terms]]\nkeep = ["text"]\nweight = 2.5\n[[guidance.terms]]\nkeep = []\nweight = -1.5',
    )
    g = load_recipe(write_recipe(text)).guidance
    assert [(sorted(t.keep), t.weight) for t in g.terms] == [(["text"], 2.5), ([], -1.5)]
    bad = write_recipe(text.replace("weight = -1.5", "weight = -1.0"))
    with pytest.raises(RecipeError, match="weights must sum to 1"):
        load_recipe(bad)


def test_unknown_recipe_and_bad_toml(write_recipe):
    with pytest.raises(RecipeError, match="unknown recipe 'nope'; built-in recipes: .*random-t2a, random-tts"):
        load_recipe("nope")
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe("missing.toml")
    with pytest.raises(RecipeError, match="invalid TOML"):
        load_recipe(write_recipe("name = \n"))


def test_diffusion_sampler_checks(write_recipe):
    v = TINY_TTS.replace("hidden = 32", 'hidden = 32\nkind = "v"')
    with pytest.raises(RecipeError, match="eta only applies to 'ddim'"):
        load_recipe(write_recipe(v.replace('type = "euler"', 'type = "dpmpp-2m"\neta = 0.5')))
    eps = TINY_TTS.replace('type = "euler"', 'type = "ddim"').replace("hidden = 32", 'hidden = 32\nkind = "eps"')
    with pytest.raises(RecipeError, match="eps-prediction model cannot start from pure noise"):
        load_recipe(write_recipe(eps))
    load_recipe(write_recipe(eps.replace('type = "ddim"', 'type = "ddim"\nzero_terminal_snr = false')))


def test_zero_init_only_on_flow_velocities(write_recipe):
    """CFG-Zero*'s zero-init means "stay put" only for a flow velocity integrated by a plain ODE step."""
    zi = TINY_TTS.replace("scales = { text = 3.0 }", "scales = { text = 3.0 }\nzero_init = 0.04")
    assert load_recipe(write_recipe(zi)).guidance.zero_init == 0.04
    eps = zi.replace('type = "euler"', 'type = "ddim"\nzero_terminal_snr = false').replace("hidden = 32", 'hidden = 32\nkind = "eps"')
    with pytest.raises(RecipeError, match="zero_init zeroes a flow velocity; it does not apply to a 'eps' model"):
        load_recipe(write_recipe(eps))


def test_building_components_leaves_global_rng_alone(write_recipe):
    import torch

    from audioguide.components import build_components

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_components(load_recipe(write_recipe(TINY_TTS)))
    assert torch.equal(torch.rand(3), expected)


def test_a_model_too_large_to_allocate_is_one_line(write_recipe):
    from audioguide.pipeline import Pipeline

    path = write_recipe(TINY_TTS.replace("hidden = 32", "hidden = 99999999999999999"))
    with pytest.raises(RecipeError) as err:
        Pipeline.from_recipe(path)
    assert "cannot build [model]" in _one_line(err)


def test_new_guiders_are_recipe_tables(write_recipe):
    dit = TINY_TTS.replace('type = "toy-flow"\n    hidden = 32', 'type = "dit"\n    dim = 32\n    depth = 3\n    heads = 2')
    assert 'type = "dit"' in dit
    text = dit.replace(
        "scales = { text = 3.0 }",
        'scales = { text = 3.0 }\n[guidance.tcfg]\nspace = "x0"\n[guidance.pag]\nscale = 2.0\nlayers = [1, 0]\n'
        "[guidance.stg]\nscale = 1.5\nlayers = [2]",
    )
    g = load_recipe(write_recipe(text)).guidance
    assert g.tcfg.space == "x0" and g.pag.layers == (0, 1) and g.stg.scale == 1.5
    assert [m.key for m in g.methods] == ["tcfg", "pag", "stg"]
    for edit, expect in [(("layers = [2]", "layer = [2]"), "[guidance].stg: unknown key 'layer'; valid keys: scale, layers"),
                         (("layers = [2]", ""), "[guidance].stg: missing key 'layers'"),
                         (('space = "x0"', 'space = "latent"'), "[guidance].tcfg: tcfg space must be one of native")]:
        with pytest.raises(RecipeError) as err:
            load_recipe(write_recipe(text.replace(*edit)))
        assert expect in _one_line(err)


def test_mean_flow_samplers_refuse_guiders_that_convert_spaces(write_recipe):
    mf = (TINY_TTS.replace('type = "euler"', 'type = "meanflow"').replace("steps = 4", "steps = 2")
          .replace("hidden = 32", "hidden = 32\nmean_flow = true"))
    load_recipe(write_recipe(mf.replace("scales = { text = 3.0 }", "scales = { text = 3.0 }\nrescale = 0.5")))
    for extra, expect in [("rescale = 0.5\nrescale_space = \"x0\"", 'rescale works in x0 space'),
                          ("[guidance.apg]\neta = 0.0", 'set apg space = "native"')]:
        with pytest.raises(RecipeError) as err:
            load_recipe(write_recipe(mf.replace("scales = { text = 3.0 }", "scales = { text = 3.0 }\n" + extra)))
        assert expect in _one_line(err)
    load_recipe(write_recipe(mf.replace("scales = { text = 3.0 }", 'scales = { text = 3.0 }\n[guidance.apg]\nspace = "native"')))


def test_predictor_corrector_sampler_from_a_recipe(write_recipe):
    import numpy as np

    from audioguide.pipeline import Pipeline

    text = TINY_TTS.replace('type = "euler"', 'type = "euler-pcg"\ncorrector_steps = 2\ncorrector_size = 0.2')
    r = load_recipe(write_recipe(text))
    assert r.sampler.type == "euler-pcg" and r.sampler.config.corrector_steps == 2
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe(text.replace("corrector_size = 0.2", "corrector_size = -1.0")))
    assert "corrector_size must be a finite number > 0" in _one_line(err)
    with pytest.raises(RecipeError, match="needs a model predicting eps or v or x0"):
        load_recipe(write_recipe(text.replace('type = "euler-pcg"', 'type = "ddim-pcg"')))
    pipe = Pipeline.from_recipe(write_recipe(text))
    a, b = pipe("hi there", seed=3)[0], pipe("hi there", seed=3)[0]
    assert np.array_equal(a, b) and np.isfinite(a).all() and not np.array_equal(a, pipe("hi there", seed=4)[0])


def test_perturbation_guidance_on_a_model_that_cannot_perturb_is_refused_at_load(write_recipe):
    from tests.conftest import TINY_TTS

    text = TINY_TTS.replace("scales = { text = 3.0 }", "scales = { text = 3.0 }\n    [guidance.pag]\n    scale = 2.0\n    layers = [0]")
    with pytest.raises(RecipeError, match=r"r\.toml: pag needs a model that perturbs 'attention' per row"):
        load_recipe(write_recipe(text))


# -- extends ------------------------------------------------------------------------------------


def test_extends_lays_a_recipe_over_its_base_key_by_key(write_recipe):
    write_recipe(TINY_TTS.replace('name = "tiny"', 'name = "tiny"\n    description = "the base"'), "base.toml")
    child = load_recipe(write_recipe("""
        extends = "base.toml"
        [sampler]
        steps = 7
        [guidance]
        rescale = 0.5
    """, "child.toml"))
    base = load_recipe(child.source.parent / "base.toml")
    assert child.name == "child" and child.description == ""  # neither is inherited
    assert child.sampler.type == "euler" and child.sampler.config.steps == 7
    assert child.guidance.rescale == 0.5 and child.guidance.scales == base.guidance.scales  # merged, not replaced
    assert child.model == base.model and child.representation == base.representation and child.conditioners == base.conditioners
    assert child.bases == ((child.source.parent / "base.toml").resolve(),)


def test_extends_replaces_a_table_whose_type_changes_and_per_condition_values_whole(write_recipe):
    write_recipe(TINY_TTS.replace('type = "euler"\n    steps = 4', 'type = "euler-pcg"\n    steps = 4\n    corrector_steps = 2'), "base.toml")
    child = load_recipe(write_recipe('extends = "base.toml"\n[sampler]\ntype = "heun"\n', "child.toml"))
    assert child.sampler.type == "heun" and child.sampler.config.steps == 16  # heun's default: nothing of euler-pcg kept
    from audioguide.recipes import _lay_over

    base = {"guidance": {"scales": {"text": 2.0, "speaker": 1.0}, "rescale": 0.7},
            "train": {"dropout": {"text": 0.1, "speaker": 0.2}, "lr": 1e-3, "meanflow": {"omega": 1.5, "kappa": 0.5}}}
    over = _lay_over(base, {"guidance": {"scales": {"text": 3.0}}, "train": {"dropout": {}, "meanflow": {"omega": 1.0}}})
    assert over["guidance"] == {"scales": {"text": 3.0}, "rescale": 0.7}
    assert over["train"] == {"dropout": {}, "lr": 1e-3, "meanflow": {"omega": 1.0, "kappa": 0.5}}
    assert base["train"]["meanflow"] == {"omega": 1.5, "kappa": 0.5}  # the base document is not touched


def test_extends_keeps_the_bases_relative_paths_pointing_where_they_pointed(write_recipe, tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "w.safetensors").write_bytes(b"x")
    (tmp_path / "base" / "sound.safetensors").write_bytes(b"x")  # a packaged name stays a packaged name
    text = TINY_TTS.replace('type = "toy-flow"', 'type = "toy-flow"\n    weights = "w.safetensors"')
    write_recipe(text, "base/b.toml")
    write_recipe(TINY_TTS.replace('hop = 64', 'hop = 64\n    weights = "sound.safetensors"'), "base/p.toml")
    child = load_recipe(write_recipe('extends = "base/b.toml"\n', "c.toml"))
    assert child.model.weights == str((tmp_path / "base" / "w.safetensors").resolve())
    assert load_recipe(write_recipe('extends = "base/p.toml"\n', "p.toml")).representation.weights == "sound.safetensors"
    beside = load_recipe(write_recipe('extends = "b.toml"\n', "base/c.toml"))  # same folder: nothing to rebase
    assert beside.model.weights == "w.safetensors"


def test_extends_chains_and_builtin_bases(write_recipe):
    write_recipe(TINY_TTS, "a.toml")
    write_recipe('extends = "a.toml"\n[sampler]\nsteps = 5\n', "b.toml")
    c = load_recipe(write_recipe('extends = "b.toml"\n[guidance]\nrescale = 0.3\n', "c.toml"))
    assert c.sampler.config.steps == 5 and c.guidance.rescale == 0.3 and [p.name for p in c.bases] == ["b.toml", "a.toml"]
    fast = load_recipe(write_recipe('extends = "sound"\nname = "sound-fast"\n[sampler]\nsteps = 4\n', "fast.toml"))
    sound = load_recipe("sound")
    assert fast.name == "sound-fast" and fast.sampler.config == dataclasses.replace(sound.sampler.config, steps=4)
    assert fast.model == sound.model and fast.guidance == sound.guidance


@pytest.mark.parametrize("files,expect", [
    ({"a.toml": 'extends = "b.toml"\n', "b.toml": 'extends = "a.toml"\n'}, ["makes a cycle:", "a.toml -> ", "b.toml -> ", "/a.toml"]),
    ({"a.toml": 'extends = "a.toml"\n'}, ["makes a cycle"]),
    ({"a.toml": 'extends = "missing.toml"\n'}, ["extends 'missing.toml': recipe file not found"]),
    ({"a.toml": 'extends = "no-such-recipe"\n'}, ["no such built-in recipe", "built-in recipes:", "sound"]),
    ({"a.toml": "extends = 3\n"}, ["extends must name a built-in recipe or a .toml file, got 3"]),
    ({"a.toml": 'extends = "b.toml"\n', "b.toml": "task = \n"}, ["b.toml: invalid TOML"]),
    ({"a.toml": 'extends = "sound"\n[sampler]\nstep = 4\n'}, ["a.toml: [sampler] (euler): unknown key 'step'"]),
])
def test_extends_mistakes_are_one_line_errors(write_recipe, files, expect):
    paths = {name: write_recipe(text, name) for name, text in files.items()}
    with pytest.raises(RecipeError) as err:
        load_recipe(paths["a.toml"])
    msg = _one_line(err)
    for part in expect:
        assert part in msg


def test_builtin_variants_are_their_recipe_with_exactly_their_changes():
    """The shipped variants write only what differs from the recipe they extend."""
    from audioguide.guidance import Dynamic, GeDi

    def same(name, base, **changes):
        r, b = load_recipe(name), load_recipe(base)
        assert r.bases == (b.source,)
        want = dataclasses.replace(b, name=r.name, description=r.description, source=r.source, bases=r.bases, **changes)
        assert r == want, name

    sound, speech, lm = load_recipe("sound"), load_recipe("speech"), load_recipe("speech-lm")
    verifier_sound, verifier_speech = load_recipe("verifier-sound"), load_recipe("verifier-speech")
    same("sound-dynamic", "sound", guidance=dataclasses.replace(sound.guidance, guiders=(Dynamic((1.0, 3.0, 5.0, 8.0), "caption"),)),
         verifier=verifier_sound.verifier)
    same("speech-dynamic", "speech", guidance=dataclasses.replace(speech.guidance, guiders=(Dynamic((1.0, 2.0, 3.0), "text"),)),
         verifier=verifier_speech.verifier)
    same("speech-lm-gedi", "speech-lm", guidance=dataclasses.replace(lm.guidance, guiders=(GeDi(2.0, 50),)))
    finetune = load_recipe("sound-finetune")
    same("sound-finetune", "sound", train=dataclasses.replace(sound.train, steps=1600, lr=3e-4, warmup=100, flow_steps=0, curriculum_steps=0))
    assert finetune.model.weights == "sound.safetensors"
    distilled = load_recipe("sound-distilled")
    same("sound-distilled", "sound", model=distilled.model, sampler=distilled.sampler,
         guidance=dataclasses.replace(sound.guidance, distilled=True), train=distilled.train)
    assert distilled.model == dataclasses.replace(sound.model, weights="sound-distilled.safetensors", config=distilled.model.config)
    assert distilled.model.config == dataclasses.replace(sound.model.config, guidance_embed=("caption",))
    assert distilled.train.flow_steps == 0 and distilled.train.distill.teacher == "sound.safetensors" and distilled.sampler.type == "meanflow"
    cca = load_recipe("speech-lm-cca")
    same("speech-lm-cca", "speech-lm", model=dataclasses.replace(lm.model, weights="speech-lm-cca.safetensors"),
         guidance=dataclasses.replace(lm.guidance, scales=(("text", 1.0), ("speaker", 1.0), ("style", 1.0))), train=cca.train)
    assert cca.train.dropout == () and cca.train.input_dropout == 0.0 and cca.train.dropout_all == 0.0 and cca.train.cca.lam == 50.0
    sd = load_recipe("speech-distilled")
    same("speech-distilled", "speech", model=dataclasses.replace(speech.model, weights="speech-distilled.safetensors", config=sd.model.config),
         guidance=dataclasses.replace(speech.guidance, distilled=True), train=sd.train)
    assert sd.train.meanflow.guided_conditions == () and sd.train.meanflow.omega == 1.0 and sd.train.flow_steps == 0


def test_extends_removes_a_table_set_to_false_and_a_chain_has_a_limit(write_recipe):
    plain = load_recipe(write_recipe('extends = "speech-lm-gedi"\nverifier = false\n[guidance]\ngedi = false\n', "plain.toml"))
    lm = load_recipe("speech-lm")
    assert plain.guidance == lm.guidance and plain.verifier is None and plain.candidates == 1
    write_recipe(TINY_TTS, "r0.toml")
    for i in range(1, 10):
        write_recipe(f'extends = "r{i - 1}.toml"\n', f"r{i}.toml")
    assert load_recipe(write_recipe('extends = "r7.toml"\n', "ok.toml")).sampler.config.steps == 4  # 8 bases
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe('extends = "r8.toml"\n', "long.toml"))
    assert "more than 8 recipes in one extends chain" in _one_line(err)
    from audioguide.recipes import parse_recipe

    with pytest.raises(RecipeError, match="extends is resolved when the recipe is loaded from a file"):
        parse_recipe({"extends": "sound"}, write_recipe(TINY_TTS, "x.toml"))


def test_extends_rebases_every_path_the_base_names_trained_yet_or_not(write_recipe, tmp_path):
    (tmp_path / "base").mkdir()
    write_recipe(TINY_TTS.replace('type = "toy-flow"', 'type = "toy-flow"\n    weights = "runs/not-yet.safetensors"'), "base/untrained.toml")
    child = load_recipe(write_recipe('extends = "base/untrained.toml"\n', "c1.toml"))
    assert child.model.weights == str((tmp_path / "base" / "runs" / "not-yet.safetensors").resolve())
    hub = load_recipe(write_recipe(TINY_TTS.replace('type = "toy-flow"', 'type = "toy-flow"\n    weights = "owner/model"'), "base/hub.toml"))
    assert load_recipe(write_recipe('extends = "base/hub.toml"\n', "c2.toml")).model.weights == hub.model.weights == "owner/model"
    slm = load_recipe(write_recipe('extends = "speech-slm"\n', "c3.toml"))
    assert slm.acoustic == load_recipe("speech-slm").acoustic  # a built-in recipe name is not a path
    from audioguide.recipes import _rebase

    got = _rebase({"train": {"distill": {"teacher": "t.safetensors"}, "cca": {"reference": "sound.safetensors"}},
                   "acoustic": {"recipe": "stage.toml"}, "model": {"weights": "hf://o/m"}}, tmp_path / "base")
    assert got["train"]["distill"]["teacher"] == str((tmp_path / "base" / "t.safetensors").resolve())
    assert got["train"]["cca"]["reference"] == "sound.safetensors"  # packaged
    assert got["acoustic"]["recipe"] == str((tmp_path / "base" / "stage.toml").resolve()) and got["model"]["weights"] == "hf://o/m"


def test_an_error_from_a_base_names_the_base(write_recipe):
    write_recipe(TINY_TTS.replace("steps = 4", "stepz = 4"), "base.toml")
    with pytest.raises(RecipeError) as err:
        load_recipe(write_recipe('extends = "base.toml"\n', "child.toml"))
    msg = _one_line(err)
    assert "unknown key 'stepz'" in msg and "laid over" in msg and "base.toml" in msg


def test_a_render_jobs_identity_covers_the_recipes_it_extends(write_recipe):
    from types import SimpleNamespace

    from audioguide.render.jobs import identity

    base = write_recipe(TINY_TTS, "base.toml")
    plain = identity(SimpleNamespace(recipe=load_recipe(base)))
    assert "bases_sha256" not in plain  # a recipe without extends is identified as before
    child = write_recipe('extends = "base.toml"\n', "child.toml")
    first = identity(SimpleNamespace(recipe=load_recipe(child)))
    base.write_text(base.read_text() + "\n[duration]\nseconds_per_char = 0.08\n")
    second = identity(SimpleNamespace(recipe=load_recipe(child)))
    assert first["recipe_sha256"] == second["recipe_sha256"] and first["bases_sha256"] != second["bases_sha256"]
