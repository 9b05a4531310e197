"""Speaker conditioners: a named voice (id embedding) or a reference recording (audio embedding)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from audioguide.audio import log_mel, read_audio
from audioguide.conditioners.base import Conditioner, Encoded
from audioguide.core import AudioguideError


@dataclass(frozen=True)
class SpeakerIdConfig:
    voices: tuple[str, ...] = ()
    dim: int = 64
    descriptions: tuple[str, ...] = ()  # optional, one per voice, shown by `audioguide voices`

    def __post_init__(self) -> None:
        if not self.voices:
            raise ValueError("voices must name at least one voice")
        if self.descriptions and len(self.descriptions) != len(self.voices):
            raise ValueError(f"descriptions must give one line per voice ({len(self.voices)}), got {len(self.descriptions)}")
        if len(set(self.voices)) != len(self.voices):
            raise ValueError("voices must be unique")
        if self.dim <= 0:
            raise ValueError("dim must be positive")


class SpeakerId(Conditioner):
    """One learned embedding per named voice (a length-1 condition sequence)."""

    Config = SpeakerIdConfig

    def __init__(self, config: SpeakerIdConfig) -> None:
        super().__init__(config.dim)
        self.config = config
        self.index = {v: i for i, v in enumerate(config.voices)}
        self.table = nn.Embedding(len(config.voices), config.dim)

    def grown(self, weight: torch.Tensor) -> torch.Tensor:
        """A trained table ``weight`` with fewer rows than this conditioner's voices, grown for a
        warm start: voices added at the end of ``voices`` start from the mean of the trained rows
        (the average voice), every trained voice keeps its row. Tables of this size come back as
        they are; larger ones or other widths are left for loading to reject."""
        rows, dim = self.table.weight.shape
        if weight.ndim != 2 or weight.shape[1] != dim or not 0 < weight.shape[0] < rows:
            return weight
        mean = weight.mean(0, keepdim=True).expand(rows - weight.shape[0], dim)
        return torch.cat([weight, mean.to(weight.dtype)])

    def check(self, inputs: Sequence[str]) -> None:
        for v in inputs:
            if v not in self.index:
                raise AudioguideError(f"unknown voice {v!r}; voices: {', '.join(self.config.voices)}")

    def forward(self, inputs: Sequence[str]) -> Encoded:
        self.check(inputs)
        ids = torch.tensor([self.index[v] for v in inputs], dtype=torch.long, device=self.null.device)
        emb = self.table(ids)[:, None]
        return Encoded(emb, torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device))


@dataclass(frozen=True)
class SpeakerReferenceConfig:
    sample_rate: int = 16000
    n_mels: int = 64
    width: int = 128
    dim: int = 64
    max_seconds: float = 10.0

    def __post_init__(self) -> None:
        if min(self.sample_rate, self.n_mels, self.width, self.dim) <= 0 or self.max_seconds <= 0:
            raise ValueError("all sizes must be positive")


class SpeakerReference(Conditioner):
    """Embeds a reference recording (path to an audio file): log-mel -> conv stack -> mean over time.

    Trained jointly with the generator (as a zero-shot speaker prompt), returning a length-1
    sequence: mean and standard deviation over time ("statistics pooling" of x-vectors, Snyder et
    al. 2018) of a small conv encoder.
    """

    Config = SpeakerReferenceConfig

    def __init__(self, config: SpeakerReferenceConfig) -> None:
        super().__init__(config.dim)
        self.config = config
        w = config.width
        self.net = nn.Sequential(
            nn.Conv1d(config.n_mels, w, 5, padding=2), nn.GELU(),
            nn.Conv1d(w, w, 5, padding=2), nn.GELU(),
            nn.Conv1d(w, w, 5, padding=2), nn.GELU(),
        )
        self.proj = nn.Linear(2 * w, config.dim)

    def embed(self, wavs: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[B, dim]`` embeddings of waveforms at ``config.sample_rate``."""
        out = []
        for wav in wavs:
            mel = log_mel(wav[None].to(self.null.device), self.config.sample_rate, n_mels=self.config.n_mels)
            h = self.net(mel)[0]
            out.append(torch.cat([h.mean(-1), h.std(-1, unbiased=False)]))
        return self.proj(torch.stack(out))

    def check(self, inputs: Sequence[str]) -> None:
        import soundfile as sf

        for path in inputs:
            try:
                info = sf.info(str(path))
            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                raise AudioguideError(f"cannot read audio {path}: {e}") from None
            if info.duration < 0.1:
                raise AudioguideError(f"reference audio {path} is shorter than 0.1 s")

    def forward(self, inputs: Sequence[str]) -> Encoded:
        wavs = []
        for path in inputs:
            wav, _ = read_audio(path, self.config.sample_rate)
            if wav.size < self.config.sample_rate // 10:
                raise AudioguideError(f"reference audio {path} is shorter than 0.1 s")
            wavs.append(torch.from_numpy(wav[: int(self.config.max_seconds * self.config.sample_rate)]))
        emb = self.embed(wavs)[:, None]
        return Encoded(emb, torch.ones(emb.shape[:2], dtype=torch.bool, device=emb.device))
