"""Every generator family through a recipe: train a tiny model on generated audio, then write a WAV.

Families: flow-matching DiT and mean-flow DiT on latents (frames, our autoencoder, EnCodec), and the
codec LM on our autoencoder's RVQ tokens; plus training the autoencoder itself.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from audioguide.checkpoints import load_checkpoint
from audioguide.cli import app
from audioguide.recipes import RecipeError, load_recipe
from audioguide.training.trainer import train
from tests.conftest import TINY_AE, TINY_AE_RECIPE, TINY_TRAIN as TRAIN

FRAMES = """
    type = "frames"
    sample_rate = 8000
    hop = 64
"""

def _recipe(representation: str, model: str, sampler: str, guidance: str = "scales = { text = 2.0 }", extra: str = "") -> str:
    return f"""
    name = "family"
    task = "tts"
    [representation]
    {representation}
    [conditioners.text]
    type = "characters"
    dim = 16
    [model]
    {model}
    [sampler]
    {sampler}
    [guidance]
    {guidance}
    {TRAIN}
    {extra}
    """


def _train_and_speak(path, corpus, tmp_path, metric="loss"):
    """Train, check ``metric`` went down, then speak through the CLI with the exported weights."""
    recipe = load_recipe(path)
    history = []
    result = train(recipe, corpus, tmp_path / "run", log=lambda step, logs: history.append(logs[metric]))
    early, late = np.mean(history[:5]), np.mean(history[-5:])
    assert len(history) == 30 and np.isfinite(result.losses).all() and late < early, (early, late)
    out = tmp_path / "speech.wav"
    res = CliRunner().invoke(app, ["tts", "ah oh", "--recipe", str(path), "--weights", str(result.export), "-o", str(out)])
    assert res.exit_code == 0, res.output
    data, sr = sf.read(str(out))
    assert sr == 8000 and data.size > 0 and np.isfinite(data).all()
    return result


DIT = 'type = "dit"\n    dim = 32\n    depth = 1\n    heads = 2'


def test_flow_dit_on_frames(write_recipe, corpus, tmp_path):
    _train_and_speak(write_recipe(_recipe(FRAMES, DIT, 'type = "heun"\n    steps = 3')), corpus, tmp_path)


def test_mean_flow_dit_with_guidance_folded_into_training(write_recipe, corpus, tmp_path):
    model = DIT + "\n    mean_flow = true"
    extra = "[train.meanflow]\n    omega = 0.5\n    kappa = 0.5\n    flow_ratio = 0.5"
    text = _recipe(FRAMES, model, 'type = "meanflow"\n    steps = 1', "scales = { text = 1.0 }", extra)
    path = write_recipe(text.replace("dropout = { text = 0.2 }", "dropout = { text = 0.2 }\n    curriculum_steps = 15"))
    assert load_recipe(path).train.meanflow.effective_scale == pytest.approx(1.0)
    # The adaptively weighted loss sits near 1 by design, and the mean-velocity error is measured
    # against targets that move with the model's own JVP; the flow-matching rows' error must fall
    # (MeanAudio's curriculum: flow matching first, then the mean-flow mix).
    _train_and_speak(path, corpus, tmp_path, metric="mse_flow")


def test_codec_lm_on_autoencoder_tokens(write_recipe, corpus, tmp_path):
    model = 'type = "codec-lm"\n    dim = 32\n    depth = 1\n    heads = 2\n    codebook_size = 16'
    text = _recipe(TINY_AE, model, 'type = "ar"\n    temperature = 0.8\n    top_k = 8')
    # the tiny autoencoder is untrained here: the recipe must say its weights are random
    path = write_recipe(text.replace('name = "family"', 'name = "family"\n    random_weights = true'))
    _train_and_speak(path, corpus, tmp_path)


def test_codec_lm_needs_matching_tokens(write_recipe):
    from audioguide.core import AudioguideError
    from audioguide.pipeline import Pipeline

    model = 'type = "codec-lm"\n    dim = 32\n    depth = 1\n    heads = 2\n    codebook_size = 32'
    text = _recipe(TINY_AE, model, 'type = "ar"').replace('name = "family"', 'name = "family"\n    random_weights = true')
    with pytest.raises(AudioguideError, match="codebook_size is 32 but the representation's is 16"):
        Pipeline.from_recipe(write_recipe(text))
    text = _recipe(FRAMES, model.replace("32\n", "16\n", 1), 'type = "ar"').replace('name = "family"', 'name = "family"\n    random_weights = true')
    with pytest.raises(AudioguideError, match="needs a tokenizing representation"):
        Pipeline.from_recipe(write_recipe(text, "b.toml"))


def test_autoencoder_trains_and_its_weights_feed_a_generator(write_recipe, corpus, tmp_path):
    ae = write_recipe(TINY_AE_RECIPE + """
    steps = 40
    batch_size = 4
    lr = 3e-3
    warmup = 3
    save_every = 40
    sample_every = 20
    validation = 0.2
    """, "ae.toml")
    result = train(load_recipe(ae), corpus, tmp_path / "ae")
    assert np.mean(result.losses[-5:]) < 0.8 * np.mean(result.losses[:5])
    assert load_checkpoint(result.export).config["component"] == "autoencoder"
    assert (tmp_path / "ae" / "samples" / "step0000020.wav").exists()
    rep = TINY_AE + f'\n    weights = "{result.export}"'
    _train_and_speak(write_recipe(_recipe(rep, DIT, 'type = "euler"\n    steps = 4'), "gen.toml"), corpus, tmp_path)


@pytest.fixture
def tiny_encodec_dir(tmp_path):
    from transformers import EncodecConfig, EncodecModel

    cfg = EncodecConfig(
        sampling_rate=8000, target_bandwidths=[1.5], num_filters=4, hidden_size=8, num_residual_layers=1,
        upsampling_ratios=[4, 4], codebook_size=16, codebook_dim=8, num_lstm_layers=1, audio_channels=1,
    )
    EncodecModel(cfg).save_pretrained(tmp_path / "encodec")
    return tmp_path / "encodec"


def test_flow_dit_on_encodec_latents(write_recipe, corpus, tmp_path, tiny_encodec_dir):
    rep = f'type = "encodec"\n    source = "{tiny_encodec_dir}"\n    bandwidth = 1.5'
    _train_and_speak(write_recipe(_recipe(rep, DIT, 'type = "euler"\n    steps = 3')), corpus, tmp_path)


@pytest.fixture()
def aligned_corpus(corpus, tmp_path):
    """The tone corpus with teacher durations: each clip split evenly over its text's characters."""
    from audioguide.audio import read_audio
    from audioguide.conditioners import Characters
    from audioguide.manifest import read_manifest, write_manifest

    chars = Characters(Characters.Config(dim=16))
    rows = []
    for row in read_manifest(corpus):
        n = len(read_audio(row.audio)[0])
        tokens = int(chars([row.text]).mask.sum())
        samples = [n // tokens] * tokens
        samples[-1] += n - sum(samples)
        rows.append({"id": row.id, "audio": str(row.audio), "text": row.text, "speaker": row.speaker,
                     "phoneme_samples": samples})
    write_manifest(tmp_path / "aligned.jsonl", rows)
    return tmp_path / "aligned.jsonl"


def test_aligned_codec_lm_trains_its_durations_and_speaks(write_recipe, aligned_corpus, tmp_path):
    """The codec LM with phonemes aligned by durations: cross-entropy and the duration loss fall,
    and the CLI speaks for the length the duration predictor gives."""
    model = 'type = "codec-lm"\n    dim = 32\n    depth = 1\n    heads = 2\n    codebook_size = 16\n    aligned = "text"\n    encoder_depth = 1'
    text = _recipe(TINY_AE, model, 'type = "ar"\n    top_k = 8', "scales = { text = 2.0, speaker = 1.0 }")
    text = text.replace('name = "family"', 'name = "family"\n    random_weights = true')
    text = text.replace("[model]", '[conditioners.speaker]\n    type = "speaker-id"\n    voices = ["s0", "s1"]\n    dim = 8\n    [model]')
    path = write_recipe(text)
    durations = []
    result = train(load_recipe(path), aligned_corpus, tmp_path / "run", log=lambda step, logs: durations.append(logs["duration"]))
    assert np.mean(durations[-5:]) < np.mean(durations[:5])
    out = tmp_path / "speech.wav"
    res = CliRunner().invoke(app, ["tts", "ah oh", "--recipe", str(path), "--weights", str(result.export), "-o", str(out)])
    assert res.exit_code == 0, res.output
    data, sr = sf.read(str(out))
    assert sr == 8000 and data.size > 0 and np.isfinite(data).all()


def test_aligned_codec_lm_resumes_bit_identically(write_recipe, aligned_corpus, tmp_path):
    """The duration predictor's dropout draws from torch's global RNG; the trainer seeds it per step,
    so a run stopped and resumed equals one that ran straight through."""
    model = 'type = "codec-lm"\n    dim = 32\n    depth = 1\n    heads = 2\n    codebook_size = 16\n    aligned = "text"\n    encoder_depth = 1'
    text = _recipe(TINY_AE, model, 'type = "ar"\n    top_k = 8', "scales = { text = 2.0 }")
    text = text.replace('name = "family"', 'name = "family"\n    random_weights = true')
    text = text.replace("[model]", '[conditioners.speaker]\n    type = "speaker-id"\n    voices = ["s0", "s1"]\n    dim = 8\n    [model]')
    recipe = load_recipe(write_recipe(text))
    recipe = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, save_every=3))
    straight = train(recipe, aligned_corpus, tmp_path / "a", steps=6)
    train(recipe, aligned_corpus, tmp_path / "b", steps=3)
    torch.manual_seed(12345)  # whatever the caller's global RNG holds
    resumed = train(recipe, aligned_corpus, tmp_path / "b", steps=6)
    assert resumed.losses == straight.losses[3:]


def test_prior_fusion_needs_a_content_prior_and_speaks_with_one(write_recipe, tmp_path):
    """[sampler] prior_weight fuses the codec LM's content prior: a recipe without a prior is a
    one-line error, one with a prior speaks, and the fusion changes the audio of the same seed."""
    model = 'type = "codec-lm"\n    dim = 32\n    depth = 1\n    heads = 2\n    codebook_size = 16\n    aligned = "text"\n    encoder_depth = 1'
    text = _recipe(TINY_AE, model, 'type = "ar"\n    top_k = 8\n    prior_weight = 2.0', "scales = { text = 2.0 }")
    text = text.replace('name = "family"', 'name = "family"\n    random_weights = true')
    text = text.replace("[model]", '[conditioners.speaker]\n    type = "speaker-id"\n    voices = ["s0", "s1"]\n    dim = 8\n    [model]')
    with pytest.raises(RecipeError, match="prior_weight.*prior_codebooks = 0"):
        load_recipe(write_recipe(text))
    waves = []
    for weight in ("50.0", "0.0"):  # a random prior is near uniform: a large weight makes it matter
        path = write_recipe(text.replace('aligned = "text"', 'aligned = "text"\n    prior_codebooks = 1').replace("prior_weight = 2.0", f"prior_weight = {weight}"))
        out = tmp_path / f"fused{weight}.wav"
        res = CliRunner().invoke(app, ["tts", "ah oh", "--recipe", str(path), "--seed", "3", "-o", str(out)])
        assert res.exit_code == 0, res.output
        waves.append(sf.read(str(out))[0])
    assert np.isfinite(waves[0]).all() and waves[0].shape == waves[1].shape and not np.allclose(waves[0], waves[1])
