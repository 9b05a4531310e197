"""`audioguide train`: every family trains end to end on a tiny generated dataset, resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from audioguide.checkpoints import load_checkpoint
from audioguide.cli import app
from audioguide.manifest import write_manifest
from audioguide.pipeline import Pipeline
from audioguide.recipes import load_recipe
from audioguide.train_config import TrainConfig
from audioguide.training.trainer import ema_decay, lr_factor, make_ema, make_lr_schedule, train
from tests.conftest import TINY_TTS

def _recipe(write_recipe, extra_train="", text=TINY_TTS):
    body = text + f"""
    [train]
    steps = 30
    batch_size = 4
    lr = 3e-3
    warmup = 5
    save_every = 10
    sample_every = 15
    validation = 0.2
    dropout = {{ text = 0.2 }}
    {extra_train}
    """
    return load_recipe(write_recipe(body))


def _early_late(losses, k=6):
    return float(np.mean(losses[:k])), float(np.mean(losses[-k:]))


def test_flow_model_trains_exports_and_samples(write_recipe, corpus, tmp_path):
    recipe = _recipe(write_recipe)
    result = train(recipe, corpus, tmp_path / "run")
    early, late = _early_late(result.losses)
    assert result.step == 30 and late < 0.8 * early
    ckpt = load_checkpoint(result.export)
    assert ckpt.kind == "toy-flow" and ckpt.config["component"] == "toy-flow" and ckpt.config["config"]["hidden"] == 32
    assert (tmp_path / "run" / "samples" / "step0000015.wav").exists()
    # the exported weights load into a pipeline through --weights
    pipe = Pipeline.from_recipe(recipe, weights=str(result.export))
    assert np.isfinite(pipe("ah", seed=0)[0]).all()


@pytest.mark.parametrize("extra_train", ["", "ema = 0.9"])
def test_resume_is_bit_identical(write_recipe, corpus, tmp_path, extra_train):
    recipe = _recipe(write_recipe, extra_train)
    straight = train(recipe, corpus, tmp_path / "a", steps=20)
    train(recipe, corpus, tmp_path / "b", steps=10)
    resumed = train(recipe, corpus, tmp_path / "b", steps=20)
    assert resumed.step == 20 and len(resumed.losses) == 10
    assert resumed.losses == straight.losses[10:]
    a, b = load_checkpoint(straight.export).tensors, load_checkpoint(resumed.export).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_new_run_warm_starts_from_the_recipe_weights_unless_from_scratch(write_recipe, corpus, tmp_path):
    first = train(_recipe(write_recipe), corpus, tmp_path / "first", steps=10)
    warm_recipe = _recipe(write_recipe, text=TINY_TTS.replace('hidden = 32', f'hidden = 32\n    weights = "{first.export}"'))
    scratch = train(_recipe(write_recipe), corpus, tmp_path / "scratch", steps=1)
    warm = train(warm_recipe, corpus, tmp_path / "warm", steps=1)
    cold = train(warm_recipe, corpus, tmp_path / "cold", steps=1, warm_start=False)
    assert cold.losses == scratch.losses  # the seeded initialisation, as if there were no weights file
    assert warm.losses[0] < 0.8 * scratch.losses[0]  # continues from the first run's trained weights
    runner = CliRunner()
    args = ["train", str(warm_recipe.source), "--data", str(corpus), "--steps", "1", "--from-scratch", "-o"]
    assert runner.invoke(app, args + [str(tmp_path / "cli")]).exit_code == 0
    a, b = load_checkpoint(tmp_path / "cli" / "model.safetensors").tensors, load_checkpoint(cold.export).tensors
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_warm_start_grows_the_voice_table_for_voices_added_at_the_end(write_recipe, corpus, tmp_path):
    from audioguide.components import build_components
    from audioguide.core import AudioguideError

    speakers = """
    [conditioners.speaker]
    type = "speaker-id"
    voices = {voices}
    dim = 8
    """
    two = TINY_TTS.replace("[model]", speakers.format(voices='["s0", "s1"]') + "\n    [model]")
    first = train(_recipe(write_recipe, text=two), corpus, tmp_path / "two", steps=3)
    three = two.replace('["s0", "s1"]', '["s0", "s1", "s2"]').replace("hidden = 32", f'hidden = 32\n    weights = "{first.export}"')
    recipe = _recipe(write_recipe, text=three)
    trained = load_checkpoint(first.export).tensors["conditioners.speaker.table.weight"]
    _, model = build_components(recipe, require_weights=False)  # a training warm start
    table = model.conditioners["speaker"].table.weight.detach()
    assert table.shape == (3, 8) and torch.equal(table[:2], trained)  # trained voices keep their rows
    assert torch.allclose(table[2], trained.mean(0))  # the new voice starts as the average voice
    assert train(recipe, corpus, tmp_path / "three", steps=1).step == 1
    with pytest.raises(AudioguideError, match="does not fit"):  # generating never grows a table
        build_components(recipe)


def test_ema_weights_are_exported(write_recipe, corpus, tmp_path):
    recipe = _recipe(write_recipe, "ema = 0.9")
    result = train(recipe, corpus, tmp_path / "run", steps=10)
    state = load_checkpoint(tmp_path / "run" / "train_state.safetensors").tensors
    exported = load_checkpoint(result.export).tensors
    key = "out.weight"
    assert torch.equal(exported[key], state[f"ema.{key}"]) and not torch.equal(exported[key], state[f"model.{key}"])


@pytest.mark.parametrize(
    "model_extra,sampler,train_extra",
    [
        ('kind = "v"', 'type = "ddim"', ""),
        ("mean_flow = true", 'type = "meanflow"\nsteps = 1', "curriculum_steps = 10"),
    ],
)
def test_diffusion_and_mean_flow_models_train(write_recipe, corpus, tmp_path, model_extra, sampler, train_extra):
    text = TINY_TTS.replace("hidden = 32", f"hidden = 32\n{model_extra}").replace('type = "euler"\n    steps = 4', sampler)
    text = text.replace("text = 3.0", "text = 1.0" if "meanflow" in sampler else "text = 3.0")
    recipe = _recipe(write_recipe, train_extra, text=text)
    result = train(recipe, corpus, tmp_path / "run")
    early, late = _early_late(result.losses)
    assert late < early and np.isfinite(result.losses).all()
    assert (tmp_path / "run" / "samples" / "step0000015.wav").exists()


def test_train_cli_and_errors(write_recipe, corpus, tmp_path):
    runner = CliRunner()
    unguided_null = write_recipe(TINY_TTS + "\n[train]\nsteps = 4\n", "u.toml")
    res = runner.invoke(app, ["train", str(unguided_null), "--data", str(corpus), "-o", str(tmp_path / "u")])
    assert res.exit_code == 2 and "'text' is guided but never dropped" in res.output
    path = write_recipe(TINY_TTS + "\n[train]\nsteps = 4\nbatch_size = 2\nsample_every = 100\ndropout = { text = 0.1 }\n")
    res = runner.invoke(app, ["train", str(path), "--data", str(corpus), "--device", "gpu", "-o", str(tmp_path / "g")])
    assert res.exit_code == 2 and "is not a device" in res.output
    res = runner.invoke(app, ["train", str(path), "--data", str(corpus), "-o", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert "trained to step 4" in res.output and (tmp_path / "run" / "model.safetensors").exists()
    bad = tmp_path / "bad.jsonl"
    write_manifest(bad, [{"id": "x", "text": "no audio here"}])
    res = runner.invoke(app, ["train", str(path), "--data", str(bad), "-o", str(tmp_path / "run2")])
    assert res.exit_code == 2 and "row 'x' has no 'audio'" in res.output
    wrong = write_recipe(TINY_TTS + "\n[train]\ndropout = { speaker = 0.1 }\n", "w.toml")
    res = runner.invoke(app, ["train", str(wrong), "--data", str(corpus)])
    assert res.exit_code == 2 and "dropout names condition 'speaker'" in res.output


@pytest.mark.slow
def test_torchrun_two_processes_on_cpu(write_recipe, corpus, tmp_path):
    """Data parallelism through torchrun (Gloo on CPU): both ranks train, rank 0 exports."""
    import os
    import subprocess
    import sys

    path = write_recipe(TINY_TTS + "\n[train]\nsteps = 3\nbatch_size = 2\nsample_every = 100\nsave_every = 3\ndropout = { text = 0.1 }\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1"}
    # --standalone: a local rendezvous on a free port (a fixed port can be taken on a busy machine)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "audioguide.cli", "train", str(path), "--data", str(corpus), "-o", str(tmp_path / "ddp")]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[:3000] + "\n...\n" + res.stderr[-1500:]  # the rank's own error comes first
    assert load_checkpoint(tmp_path / "ddp" / "model.safetensors").config["step"] == 3
    single = train(load_recipe(path), corpus, tmp_path / "single")
    a = load_checkpoint(tmp_path / "ddp" / "model.safetensors").tensors
    b = load_checkpoint(single.export).tensors
    assert any(not torch.equal(a[k], b[k]) for k in a)  # rank 1's batches changed the averaged gradients


def test_length_window_batches_pad_less_and_cover_every_clip():
    from audioguide.manifest import Row
    from audioguide.training.data import AudioDataset

    class Lengths(AudioDataset):  # clips of 1..60 samples without reading files
        def __init__(self, n):
            self.rows, self.sample_rate = [Row(id=str(i)) for i in range(n)], 8000
            self.audio = [torch.ones(1 + (i * 37) % n) for i in range(n)]
            self._index()

    data, g = Lengths(60), torch.Generator().manual_seed(0)
    plain = [data.sample(4, g) for _ in range(400)]
    bucketed = [data.sample(4, g, length_window=2) for _ in range(400)]

    def waste(batches):
        return sum(float(1 - b.lengths.float().mean() / b.lengths.max()) for b in batches) / len(batches)

    assert waste(bucketed) < 0.5 * waste(plain)
    counts = torch.bincount(torch.tensor([i for b in bucketed for i in b.indices]), minlength=60)
    assert counts.min() > 0 and counts.max() < 3 * counts.float().mean()  # the window wraps: no clip starves
    assert all(len(set(b.indices)) == 4 for b in bucketed)
    with pytest.raises(ValueError, match="length_window"):
        TrainConfig(length_window=-1)


@pytest.mark.parametrize("length_window", [0, 3])
def test_balance_evens_out_speakers(length_window):
    """balance = 1 draws two speakers of 90 and 10 rows about equally often, 0.5 in ratio 3 : 1
    (sqrt of 9 : 1), 0 in their ratio of rows; every row still comes up and batches hold distinct rows.
    (A window of 12 neighbours holds ~1.2 rows of the small speaker, so with it half a batch of 4
    cannot be theirs: balance 1 is checked without a window.)"""
    from audioguide.manifest import Row
    from audioguide.training.data import AudioDataset

    class Speakers(AudioDataset):  # 100 clips, speaker "b" on every 10th, lengths mixed
        def __init__(self):
            self.rows = [Row(id=str(i), speaker="b" if i % 10 == 0 else "a") for i in range(100)]
            self.sample_rate, self.audio = 8000, [torch.ones(1 + (i * 37) % 100) for i in range(100)]
            self._index()

    data = Speakers()
    for balance, expected in ((0.0, 0.1), (0.5, 0.25), (1.0, 0.5))[: 3 if length_window == 0 else 2]:
        g = torch.Generator().manual_seed(1)
        batches = [data.sample(4, g, length_window=length_window, balance=balance) for _ in range(1500)]
        drawn = [i for b in batches for i in b.indices]
        share_b = sum(i % 10 == 0 for i in drawn) / len(drawn)
        assert abs(share_b - expected) < 0.05, (balance, share_b)
        assert all(len(set(b.indices)) == 4 for b in batches)
        assert len(set(drawn)) == 100
    with pytest.raises(ValueError, match="balance"):
        TrainConfig(balance=1.5)


def test_balance_by_label_evens_out_classes():
    """balance_by = "label" groups rows by their class label (a sound corpus), not their speaker:
    90 rows of one class and 10 of another, all of one speaker, are drawn 1 : 1 at balance 1, while
    grouping by speaker leaves them at their ratio of rows; an unknown grouping is an error."""
    from audioguide.manifest import Row
    from audioguide.training.data import AudioDataset

    class Labels(AudioDataset):
        def __init__(self):
            self.rows = [Row(id=str(i), speaker="s", extra={"label": "siren" if i % 10 == 0 else "piano"})
                         for i in range(100)]
            self.sample_rate, self.audio = 8000, [torch.ones(1 + (i * 37) % 100) for i in range(100)]
            self._index()

    data = Labels()
    for by, expected in (("label", 0.5), ("speaker", 0.1)):
        g = torch.Generator().manual_seed(2)
        drawn = [i for _ in range(1500) for i in data.sample(4, g, balance=1.0, balance_by=by).indices]
        share = sum(i % 10 == 0 for i in drawn) / len(drawn)
        assert abs(share - expected) < 0.05, (by, share)
    with pytest.raises(ValueError, match="balance_by"):
        TrainConfig(balance_by="voice")
    with pytest.raises(ValueError, match="speaker or label"):
        data.weights(0.5, "voice")


def test_lr_schedule_is_linear_warmup_then_cosine_to_a_tenth():
    """The LambdaLR gives ``lr (step + 1) / warmup``, then ``lr (0.1 + 0.45 (1 + cos(pi p)))``."""
    import math

    cfg = TrainConfig(lr=2e-3, warmup=4, steps=24)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    scheduler = make_lr_schedule(opt, cfg)
    seen = []
    for _ in range(30):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    expected = {0: 0.25, 1: 0.5, 3: 1.0, 4: 1.0, 14: 0.1 + 0.45 * (1 + math.cos(math.pi / 2)), 24: 0.1, 29: 0.1}
    for step, fraction in expected.items():
        assert seen[step] == pytest.approx(cfg.lr * fraction, rel=1e-12), step
        assert lr_factor(step, cfg.warmup, cfg.steps) == pytest.approx(fraction, rel=1e-12)
    assert all(b <= a for a, b in zip(seen[3:], seen[4:]))  # non-increasing after the warm-up


def test_ema_follows_the_formula_and_copies_buffers():
    """After step s: ema <- d ema + (1 - d) model, d = min(decay, (1 + s) / (10 + s)); buffers copied."""
    torch.manual_seed(0)
    model = torch.nn.BatchNorm1d(3)  # weights and running statistics
    model.weight.data.normal_()
    ema = make_ema(model, 0.5)
    expected = model.weight.detach().clone()
    assert torch.equal(ema.module.weight, expected) and not ema.module.weight.requires_grad
    for step in range(4):
        with torch.no_grad():
            model.weight.add_(torch.randn(3))
            model.running_mean.add_(1.0)
        ema.update_parameters(model)
        d = ema_decay(step, 0.5)
        assert d == min(0.5, (1 + step) / (10 + step))
        expected = d * expected + (1 - d) * model.weight.detach()
        assert torch.allclose(ema.module.weight, expected, rtol=0, atol=1e-6)
        assert torch.equal(ema.module.running_mean, model.running_mean)
    assert int(ema.n_averaged) == 5  # the copy at the start plus one update per step


def test_an_objective_is_a_module_over_the_trained_weights_only(write_recipe):
    """DDP wraps the objective: its parameters are the trained module's, not the frozen representation's."""
    from audioguide.pipeline import build_components
    from audioguide.training.objectives import FlowObjective, make_objective

    recipe = _recipe(write_recipe)
    representation, model = build_components(recipe, require_weights=False, load_model=False)
    objective = make_objective(recipe, representation, model, recipe.train)
    assert isinstance(objective, FlowObjective) and objective.module is model
    assert [id(p) for p in objective.parameters()] == [id(p) for p in model.parameters()]
    assert not any(p.requires_grad for p in representation.parameters())


def test_a_state_from_another_recipe_or_an_older_format_is_refused(write_recipe, corpus, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    from audioguide.core import AudioguideError

    train(_recipe(write_recipe), corpus, tmp_path / "run", steps=1)
    other = load_recipe(write_recipe(TINY_TTS.replace('name = "tiny"', 'name = "other"') + "\n[train]\ndropout = { text = 0.2 }\n", "o.toml"))
    with pytest.raises(AudioguideError, match="belongs to recipe 'tiny'"):
        train(other, corpus, tmp_path / "run", steps=2)
    state = tmp_path / "run" / "train_state.safetensors"
    with safe_open(str(state), "pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    config = json.loads(meta["config"])
    del config["scheduler"]  # as the trainer before the LR scheduler wrote it
    save_file(tensors, str(state), metadata={**meta, "config": json.dumps(config)})
    with pytest.raises(AudioguideError, match="older audioguide"):
        train(_recipe(write_recipe), corpus, tmp_path / "run", steps=2)


@pytest.mark.slow
def test_torchrun_ranks_end_with_equal_weights_and_codebooks(corpus, tmp_path):
    """Under torchrun (DDP, Gloo on CPU) both ranks of an autoencoder run hold the same weights and
    the same RVQ codebook buffers after training: gradients reduced by DDP, buffers averaged."""
    import os
    import subprocess
    import sys
    import textwrap

    from tests.conftest import TINY_AE_RECIPE

    recipe = tmp_path / "ae.toml"
    recipe.write_text(textwrap.dedent(TINY_AE_RECIPE + """
    steps = 2
    batch_size = 2
    save_every = 2
    sample_every = 100
    ema = 0.5
    """))
    script = tmp_path / "ranks.py"
    script.write_text(textwrap.dedent(f"""
        import os, torch
        from safetensors.torch import save_file
        import audioguide.training.trainer as T
        from audioguide.recipes import load_recipe
        made = []
        def capture(*args, **kwargs):
            made.append(T_make(*args, **kwargs))
            return made[-1]
        T_make, T.make_objective = T.make_objective, capture
        T.train(load_recipe({str(recipe)!r}), {str(corpus)!r}, {str(tmp_path / "run")!r})
        state = {{k: v.contiguous() for k, v in made[0].module.state_dict().items()}}
        save_file(state, {str(tmp_path)!r} + f"/rank{{os.environ['RANK']}}.safetensors")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[:3000] + "\n...\n" + res.stderr[-1500:]
    from safetensors.torch import load_file

    a, b = (load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1))
    assert any("codebooks" in k for k in a) and a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert load_checkpoint(tmp_path / "run" / "model.safetensors").config["step"] == 2



def _ae_recipe(write_recipe, tail: str):
    from tests.conftest import TINY_AE_RECIPE

    return load_recipe(write_recipe(TINY_AE_RECIPE + """
    steps = 3
    batch_size = 2
    lr = 1e-2
    warmup = 0
    save_every = 3
    sample_every = 100
    validation = 0.0
    """ + tail))


def test_freeze_fine_tunes_the_decoder_and_keeps_the_latents_bit_for_bit(write_recipe, corpus, tmp_path):
    """[train] freeze = encoder, posterior projection and quantizer: after training, those weights,
    the latent scale and the RVQ codebooks are the initial ones exactly, so encode() gives the same
    latents and tokens; the decoder did learn. Without freeze the encoder moves too."""
    from audioguide.components import build_components

    frozen = ("encoder", "posterior_proj", "quantizer")
    recipe = _ae_recipe(write_recipe, 'freeze = ["encoder", "posterior_proj", "quantizer"]')
    before = {k: v.clone() for k, v in build_components(recipe, require_weights=False)[0].state_dict().items()}
    after = load_checkpoint(train(recipe, corpus, tmp_path / "frozen").export).tensors
    kept = [k for k in before if k.startswith(frozen) or k.startswith("latent_")]
    assert any("codebooks" in k for k in kept) and any(k.startswith("encoder.") for k in kept)
    assert all(torch.equal(before[k], after[k].to(before[k].dtype)) for k in kept)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(("decoder.", "head.")))

    free = load_checkpoint(train(_ae_recipe(write_recipe, ""), corpus, tmp_path / "free").export).tensors
    assert any(not torch.equal(before[k], free[k]) for k in before if k.startswith("encoder."))
    assert not torch.equal(before["latent_power"], free["latent_power"])


def test_freeze_names_must_be_parts_of_the_trained_module(write_recipe, corpus, tmp_path):
    from audioguide.core import AudioguideError

    with pytest.raises(AudioguideError, match="no submodule 'encoderr'.*parts: encoder"):
        train(_ae_recipe(write_recipe, 'freeze = ["encoderr"]'), corpus, tmp_path / "a")
    everything = 'freeze = ["encoder", "posterior_proj", "decoder", "head", "quantizer"]'
    with pytest.raises(AudioguideError, match="nothing .* to train"):
        train(_ae_recipe(write_recipe, everything), corpus, tmp_path / "b")
    with pytest.raises(Exception, match="distinct"):
        _ae_recipe(write_recipe, 'freeze = ["encoder", "encoder"]')
