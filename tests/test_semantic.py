"""Supervised semantic tokens (issue 23): FSQ, the tokenizer and its training target, the token
conditioner, the codec LM's content stride, and the staged recipe (LM -> acoustic DiT -> decoder)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audioguide.audio import read_audio
from audioguide.checkpoints import load_checkpoint
from audioguide.cli import app
from audioguide.conditioners.tokens import SemanticTokenIds, SemanticTokensConfig, token_text
from audioguide.core import AudioguideError, fsq_bound, fsq_coordinates, fsq_indices, fsq_quantize
from audioguide.manifest import read_manifest
from audioguide.pipeline import Pipeline
from audioguide.recipes import RecipeError, load_recipe
from audioguide.representations.semantic import SemanticConfig, Tokenizer, tokenizer_loss
from audioguide.training.trainer import train
from tests.conftest import TINY_AE, TINY_TRAIN
from tests.test_verifier import phoneme_corpus  # noqa: F401  (fixture)

SEMANTIC = """
    type = "semantic"
    autoencoder = ""
    sample_rate = 8000
    n_fft = 256
    hop = 64
    n_mels = 32
    channels = 8
    width = 32
    encoder_depth = 1
    depth = 1
    n_codebooks = 2
    codebook_size = 16
    stride = 2
    levels = [3, 4]
    dim = 16
    dilations = [1]
    token_depth = 1
    kernel = 3
"""

TOKENIZER = f"""
    name = "tiny-tokenizer"
    task = "tts"
    [representation]{SEMANTIC}WEIGHTS
    [conditioners.text]
    type = "phonemes"
    dim = 16
    edges = true
    [train]
    target = "representation"
    steps = 30
    batch_size = 4
    lr = 3e-3
    warmup = 3
    save_every = 30
    log_every = 1
    sample_every = 1000
    validation = 0.0
"""

ACOUSTIC = f"""
    name = "tiny-acoustic"
    task = "acoustic"
    random_weights = true
    [representation]{TINY_AE}
    [conditioners.tokens]
    type = "semantic-tokens"
    levels = LEVELS
    frames = 2
    dim = 16
    [conditioners.speaker]
    type = "speaker-id"
    voices = ["s0", "s1"]
    dim = 8
    [model]
    type = "dit"
    dim = 32
    depth = 1
    heads = 2
    patch = 2
    mean_flow = true
    aligned = "tokens"
    encoder_depth = 1
    decoder_depth = 1
    cond_mode = "cross"
    seed = 3
    [sampler]
    type = "meanflow"
    steps = 2
    [guidance]
    scales = {{ tokens = 1.0 }}
    [defaults]
    speaker = "s1"
""" + TINY_TRAIN.replace("dropout = { text = 0.2 }", "dropout = { tokens = 0.2 }").replace("steps = 30", "steps = 4")

LM = f"""
    name = "tiny-slm"
    task = "tts"
    random_weights = true
    [representation]{SEMANTIC}
    [conditioners.text]
    type = "phonemes"
    dim = 16
    edges = true
    [conditioners.speaker]
    type = "speaker-id"
    voices = ["s0", "s1"]
    dim = 8
    [model]
    type = "codec-lm"
    dim = 32
    depth = 1
    heads = 2
    codebook_size = 12
    aligned = "text"
    encoder_depth = 1
    prior_codebooks = 1
    content_stride = 2
    seed = 3
    [sampler]
    type = "ar"
    top_k = 8
    [guidance]
    scales = {{ text = 2.0 }}
    [acoustic]
    recipe = "acoustic.toml"
    [defaults]
    speaker = "s0"
"""


def _nonzero(model: torch.nn.Module, seed: int = 0) -> None:
    """A DiT starts as exactly zero (adaLN-Zero): give its zeroed weights values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.add_(0.2 * torch.randn(p.shape, generator=g))


# -- FSQ ---------------------------------------------------------------------------------------


def test_fsq_rounds_each_channel_to_its_levels_and_ids_are_a_bijection():
    levels = torch.tensor([8, 5, 5, 5])
    z = 4 * torch.randn(4096, 4, generator=torch.Generator().manual_seed(0))
    q = fsq_quantize(z, levels)
    for i, level in enumerate(levels.tolist()):  # every channel takes exactly L values in [-1, 1]
        values = q[:, i].unique()
        assert len(values) == level and values.min() >= -1 and values.max() <= 1
    ids = fsq_indices(q, levels)
    assert ids.min() >= 0 and ids.max() < 1000
    assert torch.allclose(fsq_coordinates(ids, levels), q)  # the ids give the values back
    every = torch.arange(1000)
    assert torch.equal(fsq_indices(fsq_coordinates(every, levels), levels), every)
    assert len({tuple(c) for c in fsq_coordinates(every, levels).tolist()}) == 1000
    # the bound maps 0 to a level (odd L: the middle one) and is monotonic
    assert fsq_bound(torch.zeros(1, 4), levels).round().tolist() == [[0.0, 0.0, 0.0, 0.0]]
    grid = torch.linspace(-5, 5, 101)[:, None].expand(-1, 4)
    assert (fsq_bound(grid, levels).diff(dim=0) >= 0).all()


def test_fsq_passes_gradients_straight_through():
    levels = torch.tensor([3, 4])
    z = torch.randn(10, 2, requires_grad=True)
    fsq_quantize(z, levels).sum().backward()
    expected = torch.autograd.grad(fsq_bound(z, levels).div(levels // 2).sum(), z)[0]
    assert torch.allclose(z.grad, expected)


def test_the_tokenizer_emits_one_token_per_stride_frames_and_its_loss_reads_the_tokens():
    config = SemanticConfig(channels=8, stride=4, levels=(3, 4), dim=16, dilations=(1,), token_depth=1, kernel=3, recon=0.5)
    tok = Tokenizer(config)
    z = torch.randn(2, 8, 37, generator=torch.Generator().manual_seed(1))
    ids = tok.tokens(z)
    assert ids.shape == (2, math.ceil(37 / 4)) and ids.max() < 12
    targets = torch.randint(1, 20, (2, 37), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 30:] = False
    loss, logs = tokenizer_loss(tok, z, targets, mask)
    assert loss.item() == pytest.approx(logs["phones"] + 0.5 * logs["recon"], rel=1e-5)
    loss.backward()
    assert tok.proj_in.weight.grad.abs().sum() > 0  # through the rounding
    # padding frames do not count: changing their targets changes nothing
    changed = targets.clone()
    changed[1, 30:] = 0
    assert tokenizer_loss(tok, z, changed, mask)[0].item() == pytest.approx(loss.item(), rel=1e-6)


# -- the token conditioner and the codec LM's content stride ----------------------------------------


def test_token_strings_embed_per_id_and_bad_ones_are_one_line_errors():
    cond = SemanticTokenIds(SemanticTokensConfig(levels=(3, 4), frames=2, dim=8))
    enc = cond(["0 5 11", "5"])
    assert enc.emb.shape == (2, 3, 8) and enc.mask.tolist() == [[True] * 3, [True, False, False]]
    assert torch.equal(enc.emb[0, 1], enc.emb[1, 0])  # the same id, the same vector
    assert cond.frames_per_token == 2 and token_text(torch.tensor([3, 0, 11])) == "3 0 11"
    with torch.no_grad():  # without the table, a token is the linear map of its place in the tokenizer's grid
        cond.table.weight.zero_()
    grid = cond.coords(fsq_coordinates(torch.tensor([0, 5, 11]), torch.tensor([3, 4])))
    assert torch.allclose(cond(["0 5 11"]).emb[0], grid)
    for bad, match in [("", "empty"), ("1 x 2", "integers"), ("12", "out of range"), ("-1", "integers")]:
        with pytest.raises(AudioguideError, match=match):
            cond.check([bad])


def test_a_decoder_reading_conditioner_adds_the_tokenizers_frame_features_of_each_token():
    config = SemanticConfig(channels=8, stride=2, levels=(3, 4), dim=16, dilations=(1,), token_depth=1, kernel=3)
    tok = Tokenizer(config)
    cond = SemanticTokenIds(SemanticTokensConfig(levels=(3, 4), frames=2, dim=8, decoder=True, decoder_dim=16,
                                                 decoder_depth=1, decoder_kernel=3))
    plain = SemanticTokenIds(SemanticTokensConfig(levels=(3, 4), frames=2, dim=8))
    plain.load_state_dict({k: v for k, v in cond.state_dict().items() if not k.startswith(("decoder.", "from_decoder."))})
    cond.decoder.load_state_dict(tok.decoder.state_dict())  # what scripts/warm_start.py copies
    z = torch.randn(1, 8, 10, generator=torch.Generator().manual_seed(3))
    q = tok.quantized(z)
    text = token_text(fsq_indices(q, torch.tensor([3, 4]))[0])
    with torch.no_grad():
        cond.from_decoder.weight.zero_()
        cond.from_decoder.bias.zero_()
    assert torch.equal(cond([text]).emb, plain([text]).emb)  # a zeroed projection: the warm start changes nothing
    with torch.no_grad():  # the projection reads the second frame's first 8 features of each token
        cond.from_decoder.weight[:, 16:24] = torch.eye(8)
    features = tok.decoder(q, 10)  # [1, 10, 16]: the features the tokenizer's heads read
    expected = plain([text]).emb + features[:, 1::2, :8]
    assert torch.allclose(cond([text]).emb, expected, atol=1e-5)
    # a row reads the same beside a longer one: its padding does not leak into its features
    with torch.no_grad():
        cond.from_decoder.weight.normal_(generator=torch.Generator().manual_seed(5))
    alone, batched = cond(["1 2 3 4"]).emb[0], cond(["1 2 3 4", "5 6 7 8 9 10 11 0 1"]).emb[0, :4]
    assert torch.allclose(alone, batched, atol=1e-5)


def test_a_tokenizer_checkpoint_from_before_the_decoder_module_loads_under_its_former_names():
    config = SemanticConfig(channels=8, stride=2, levels=(3, 4), dim=16, dilations=(1,), token_depth=1, kernel=3)
    tok = Tokenizer(config)
    before = {k.removeprefix("decoder."): v for k, v in tok.state_dict().items()}  # the former layout
    assert "from_fsq.weight" in before and "up.weight" in before and "norm.weight" in before
    fresh = Tokenizer(SemanticConfig(**{**config.__dict__, "seed": 1}))
    fresh.load_state_dict(before)
    z = torch.randn(1, 8, 10, generator=torch.Generator().manual_seed(4))
    q = tok.quantized(z)
    assert torch.equal(fresh.heads(q, 10)[0], tok.heads(q, 10)[0])


def test_a_content_stride_gives_each_step_the_mean_of_its_content_frames():
    from tests.test_codec_lm import tiny

    lm = tiny(("text", "style"), content_stride=2, aligned="text").eval()
    cond = lm.encode({"text": ["abc"], "style": ["x"]})
    L = cond["text.mask"].shape[1]
    durations = torch.zeros(1, L, dtype=torch.long)
    durations[0, :3] = torch.tensor([1, 4, 1])  # token 0 lasts one content frame: half a step
    cond["text.durations"] = durations
    encoded = lm.conditions(cond, {})
    states = lm.content.encode(encoded["text"])
    frames = lm._frames(cond, {}, encoded, 3)
    expected = torch.stack([(states[0, 0] + states[0, 1]) / 2, states[0, 1], (states[0, 1] + states[0, 2]) / 2])
    assert torch.allclose(frames[0], expected, atol=1e-6)
    assert lm.prefill(cond, {}).frames.shape[1] == 3 + lm.n_codebooks - 1  # ceil(6 / 2) steps


# -- training and the staged recipe ----------------------------------------------------------------


def test_the_tokenizer_trains_on_teacher_alignments_and_ships_only_its_own_weights(write_recipe, phoneme_corpus, tmp_path):  # noqa: F811
    history = []
    recipe = load_recipe(write_recipe(TOKENIZER.replace("WEIGHTS", ""), "tok.toml"))
    result = train(recipe, phoneme_corpus, tmp_path / "run", log=lambda step, logs: history.append(logs))
    assert len(history) == 30 and np.mean([h["phones"] for h in history[-5:]]) < np.mean([h["phones"] for h in history[:5]])
    ckpt = load_checkpoint(result.export)
    assert ckpt.config["component"] == "semantic" and all(not k.startswith("autoencoder.") for k in ckpt.tensors)
    # a recipe naming those weights loads them into its tokenizer
    from audioguide.components import build_components

    shipped = load_recipe(write_recipe(TOKENIZER.replace("WEIGHTS", f'\n    weights = "{result.export}"'), "tok2.toml"))
    representation, _ = build_components(shipped)
    state = representation.tokenizer.state_dict()
    assert all(torch.equal(state[k], v.to(state[k].dtype)) for k, v in ckpt.tensors.items())


def test_data_tokens_writes_each_rows_tokens_and_an_acoustic_stage_trains_on_them(write_recipe, phoneme_corpus, tmp_path):  # noqa: F811
    tok = write_recipe(TOKENIZER.replace("WEIGHTS", ""), "tok.toml")
    out = tmp_path / "tokens.jsonl"
    result = CliRunner().invoke(app, ["data", "tokens", "--data", str(phoneme_corpus), "-o", str(out), "--recipe", str(tok)])
    assert result.exit_code == 0, result.output
    rows = read_manifest(out)
    for row in rows:
        n = len(read_audio(row.audio, 8000)[0])
        assert len(row.extra["tokens"].split()) == math.ceil(math.ceil(n / 64) / 2)
    acoustic = load_recipe(write_recipe(ACOUSTIC.replace("LEVELS", "[3, 4]"), "acoustic.toml"))
    history = []
    # the tokens' fixed span stands for teacher durations: rows without phoneme_samples train too
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "phoneme_samples"}) + "\n"
                             for line in out.read_text().splitlines()))
    train(acoustic, plain, tmp_path / "run", log=lambda step, logs: history.append(logs["loss"]))
    assert len(history) == 4 and all(np.isfinite(history))
    bad = CliRunner().invoke(app, ["data", "tokens", "--data", str(phoneme_corpus), "-o", str(tmp_path / "x.jsonl"),
                                   "--recipe", str(write_recipe(ACOUSTIC.replace("LEVELS", "[3, 4]"), "a2.toml"))])
    assert bad.exit_code == 2 and "semantic tokenizer" in bad.output and not (tmp_path / "x.jsonl").exists()


def _staged(write_recipe) -> Pipeline:
    write_recipe(ACOUSTIC.replace("LEVELS", "[3, 4]"), "acoustic.toml")
    pipe = Pipeline.from_recipe(write_recipe(LM, "slm.toml"))
    _nonzero(pipe.acoustic.model)
    return pipe


def test_a_staged_recipe_renders_its_tokens_in_the_voice_reproducibly(write_recipe):
    pipe = _staged(write_recipe)
    assert pipe.acoustic is not None and pipe.representation.hop == 128
    text = "Oh oh, a longer sentence here."
    plan = pipe.prepare(text, seed=5, inputs={"speaker": "s1"})
    piece = plan.pieces[0]
    assert dict(piece.inputs) == {"speaker": "s1"}
    codes = pipe.draw(plan)[0]
    assert codes.shape == (1, 1, piece.frames) and codes.max() < 12
    latents = pipe.render(piece, codes)
    assert latents[0].shape == (1, 8, 2 * piece.frames)  # two latent frames per token
    audio = pipe(text, seed=5, inputs={"speaker": "s1"})[0]
    assert len(audio) == piece.frames * 128 and np.isfinite(audio).all()
    assert np.array_equal(audio, pipe(text, seed=5, inputs={"speaker": "s1"})[0])
    # the voice reaches the acoustic stage: another speaker, the same tokens, other audio
    other = pipe.acoustic.decode(pipe.render(piece.__class__(**{**piece.__dict__, "inputs": (("speaker", "s0"),)}), codes)[0])[0]
    assert not torch.allclose(other, pipe.acoustic.decode(latents[0])[0])


def test_warm_start_gives_an_acoustic_stage_the_tokenizers_decoder_and_changes_nothing_it_renders(write_recipe, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from audioguide.checkpoints import save_checkpoint
    from audioguide.components import build_components

    plain_recipe = load_recipe(write_recipe(ACOUSTIC.replace("LEVELS", "[3, 4]"), "plain.toml"))
    _, plain = build_components(plain_recipe)
    _nonzero(plain)
    save_checkpoint(tmp_path / "plain.safetensors", plain.state_dict(), {"component": "dit"}, kind="dit")
    tok = Tokenizer(SemanticConfig(channels=8, stride=2, levels=(3, 4), dim=16, dilations=(1,), token_depth=1, kernel=3))
    former = {k.removeprefix("decoder."): v for k, v in tok.state_dict().items()}  # as the shipped file names them
    save_checkpoint(tmp_path / "tok.safetensors", former, {"component": "semantic"}, kind="semantic")
    decoded = ACOUSTIC.replace("LEVELS", "[3, 4]\n    decoder = true\n    decoder_dim = 16\n    decoder_depth = 1\n    decoder_kernel = 3")
    write_recipe(decoded.replace('[model]\n', f'[model]\n    weights = "{tmp_path / "warm.safetensors"}"\n'), "decoded.toml")
    renames = [f"--rename={p}=conditioners.tokens.decoder.{p}" for p in ("from_fsq.", "up_blocks.", "up.", "out_blocks.", "norm.")]
    run = subprocess.run([sys.executable, "scripts/warm_start.py", str(tmp_path / "decoded.toml"), str(tmp_path / "tok.safetensors"),
                          str(tmp_path / "plain.safetensors"), str(tmp_path / "warm.safetensors"), *renames,
                          "--zero", "conditioners.tokens.from_decoder."], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    warm = load_checkpoint(tmp_path / "warm.safetensors").tensors
    assert torch.equal(warm["conditioners.tokens.decoder.up.weight"], tok.decoder.up.weight.detach())
    assert not warm["conditioners.tokens.from_decoder.weight"].any()
    pipe, base = Pipeline.from_recipe(tmp_path / "decoded.toml"), Pipeline.from_components(plain_recipe, *build_components(plain_recipe)[:1], plain)
    assert np.array_equal(pipe(["0 5 11 2"], seed=2)[0], base(["0 5 11 2"], seed=2)[0])
    bad = subprocess.run([sys.executable, "scripts/warm_start.py", str(tmp_path / "decoded.toml"), str(tmp_path / "plain.safetensors"),
                          str(tmp_path / "x.safetensors"), "--zero", "nothing."], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert bad.returncode != 0 and "error: --zero nothing." in bad.stderr and not (tmp_path / "x.safetensors").exists()
    before = (tmp_path / "plain.safetensors").read_bytes()  # a forgotten TARGET must not overwrite the last source
    same = subprocess.run([sys.executable, "scripts/warm_start.py", str(tmp_path / "decoded.toml"), str(tmp_path / "tok.safetensors"),
                           str(tmp_path / "plain.safetensors")], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert same.returncode != 0 and "--force" in same.stderr and (tmp_path / "plain.safetensors").read_bytes() == before


def test_an_acoustic_stage_must_read_the_lms_tokens(write_recipe):
    write_recipe(ACOUSTIC.replace("LEVELS", "[4, 4]"), "acoustic.toml")
    with pytest.raises(RecipeError, match="reads 16 token ids"):
        Pipeline.from_recipe(write_recipe(LM, "slm.toml"))
    with pytest.raises(RecipeError, match="semantic"):  # only a codec LM over semantic tokens has an acoustic stage
        load_recipe(write_recipe(ACOUSTIC.replace("LEVELS", "[3, 4]") + '\n[acoustic]\nrecipe = "acoustic.toml"\n', "bad.toml"))


def test_token_remap_carries_each_new_token_to_the_rows_of_the_old_tokens_it_replaces(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from audioguide.checkpoints import save_checkpoint

    # the old tokenizer said 0 1 2 3 0; the new one says 3 2 1 0 1 at the same places
    old = [{"audio": f"{i}.wav", "tokens": "0 1 2 3 0"} for i in range(3)]
    new = [{"audio": f"{i}.wav", "tokens": "3 2 1 0 1"} for i in range(3)]
    for name, rows in (("old", old), ("new", new)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    g = torch.Generator().manual_seed(0)
    lm = {"embed.0.weight": torch.randn(6, 3, generator=g), "heads.weight": torch.randn(4, 3, generator=g),
          "heads.bias": torch.randn(4, generator=g), "blocks.0.w": torch.randn(3, 3, generator=g)}
    save_checkpoint(tmp_path / "lm.safetensors", lm, {"component": "codec_lm"}, kind="codec-lm")
    run = subprocess.run([sys.executable, "scripts/token_remap.py", str(tmp_path / "old.jsonl"), str(tmp_path / "new.jsonl"),
                          str(tmp_path / "lm.safetensors"), str(tmp_path / "out.safetensors"), "--levels", "2,2"],
                         capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr
    out = load_checkpoint(tmp_path / "out.safetensors").tensors
    for name in ("embed.0.weight", "heads.weight", "heads.bias"):
        before, after = lm[name], out[name]
        assert torch.allclose(after[3], before[0]) and torch.allclose(after[2], before[1]) and torch.allclose(after[0], before[3])
        assert torch.allclose(after[1], (before[2] + before[0]) / 2)  # new 1 stood for old 2 and old 0 equally often
    assert torch.equal(out["embed.0.weight"][4:], lm["embed.0.weight"][4:])  # bos and pad stay
    assert torch.equal(out["blocks.0.w"], lm["blocks.0.w"])


def test_token_remap_folds_the_acoustic_stage_grid_map_into_its_table_and_refuses_mismatched_rows(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from audioguide.checkpoints import save_checkpoint

    (tmp_path / "old.jsonl").write_text(json.dumps({"audio": "a.wav", "tokens": "0 1 2 3 0"}) + "\n")
    (tmp_path / "new.jsonl").write_text(json.dumps({"audio": "a.wav", "tokens": "3 2 1 0 1"}) + "\n")
    old_cond = SemanticTokenIds(SemanticTokensConfig(levels=(2, 2), frames=1, dim=3))
    state = {f"conditioners.tokens.{k}": v for k, v in old_cond.state_dict().items()}
    save_checkpoint(tmp_path / "dit.safetensors", state, {"component": "dit"}, kind="dit")
    root = Path(__file__).resolve().parents[1]

    def remap(*extra):
        return subprocess.run([sys.executable, "scripts/token_remap.py", str(tmp_path / "old.jsonl"), str(tmp_path / "new.jsonl"),
                               str(tmp_path / "dit.safetensors"), str(tmp_path / "out.safetensors"), *extra],
                              capture_output=True, text=True, cwd=root)

    assert remap("--levels", "2,2").returncode == 0
    new_cond = SemanticTokenIds(SemanticTokensConfig(levels=(2, 2), frames=1, dim=3))
    out = load_checkpoint(tmp_path / "out.safetensors").tensors
    new_cond.load_state_dict({k.removeprefix("conditioners.tokens."): v for k, v in out.items()})
    assert not new_cond.coords.weight.any()  # folded into the table
    with torch.no_grad():
        before, after = old_cond(["0 1 2 3"]).emb[0], new_cond(["0 1 2 3"]).emb[0]
    # new 3 = old 0, new 2 = old 1, new 0 = old 3, new 1 = half old 2, half old 0: whole embeddings, grid part included
    assert torch.allclose(after[3], before[0], atol=1e-6) and torch.allclose(after[0], before[3], atol=1e-6)
    assert torch.allclose(after[1], (before[2] + before[0]) / 2, atol=1e-6)
    bad = remap("--levels", "2,3")  # a grid that is not the table's: one line, no file
    assert bad.returncode != 0 and bad.stderr.strip().startswith("error:") and len(bad.stderr.strip().splitlines()) == 1
    (tmp_path / "new.jsonl").write_text(json.dumps({"audio": "a.wav", "tokens": "3 2 1"}) + "\n")  # another rate
    bad = remap("--levels", "2,2")
    assert bad.returncode != 0 and "share a rate" in bad.stderr
