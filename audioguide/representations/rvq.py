"""Residual vector quantization with EMA codebooks (Zeghidour et al. 2021, SoundStream, Alg. 1).

Stage ``k`` quantizes the residual left by stages ``0..k-1`` to its nearest codeword::

    r_0 = z,   c_k = argmin_i ||r_k - e^k_i||^2,   r_{k+1} = r_k - e^k_{c_k},   z_q = sum_k e^k_{c_k}

Codebooks are not trained by gradients but by exponential moving averages of the residuals
assigned to each codeword (van den Oord et al. 2017, arXiv 1711.00937, Appendix A.1)::

    N_i <- g N_i + (1 - g) n_i,   m_i <- g m_i + (1 - g) sum_{j: c_j = i} r_j,   e_i = m_i / N_i

The encoder is pulled towards its codes by the commitment term of van den Oord et al. 2017, eq. 3,
``||z - sg[z_q]||^2`` (returned unweighted, averaged over elements), and receives the decoder's
gradient through the straight-through estimator ``z + sg[z_q - z]``.

Two deterministic refinements (no random draws, so no generator is needed):

* the first training batch initialises every stage by a few Lloyd (k-means) iterations on its
  residuals, seeded with vectors at evenly spaced positions of the batch (SoundStream §III-C uses
  k-means initialisation). Because each centroid is the mean of its cluster, every stage lowers
  the total squared residual of that batch (the origin is never a better centre than a mean);
* dead-code restart: a codeword whose EMA usage falls below ``restart_ratio`` times the mean usage
  is moved to one of the batch residuals that its stage currently quantizes worst (Dhariwal et
  al. 2020, Jukebox, restart dead codes at batch vectors).

Quantizer dropout (SoundStream §III-C) is the caller's choice: ``forward(z, n_q)`` accepts one
number of active stages per batch row, drawn by the trainer from its own generator.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _nearest(vectors: Tensor, codebook: Tensor) -> Tensor:
    """Index of the nearest codeword (squared Euclidean) for each row of ``vectors`` ``[N, D]``."""
    dist = vectors.pow(2).sum(-1, keepdim=True) - 2 * vectors @ codebook.t() + codebook.pow(2).sum(-1)
    return dist.argmin(dim=-1)


def _flatten(z: Tensor) -> Tensor:
    """``[B, D, T] -> [B*T, D]`` (batch-major)."""
    return z.transpose(1, 2).reshape(-1, z.shape[1])


def _active_stages(n_q: Tensor | int | None, batch: int, k_total: int, device: torch.device) -> Tensor:
    """Boolean mask ``[B, K]``: stage ``k`` is used for row ``b`` iff ``k < n_q[b]``."""
    if n_q is None:
        n_q = k_total
    n = torch.as_tensor(n_q, device=device).long().reshape(-1).expand(batch)
    if bool((n < 0).any()) or bool((n > k_total).any()):
        raise ValueError(f"n_q must lie in [0, {k_total}], got {n.tolist()}")
    return torch.arange(k_total, device=device)[None] < n[:, None]


class ResidualVQ(nn.Module):
    """``K`` codebooks of ``V`` codewords of dimension ``D``, applied residually to ``z`` ``[B, D, T]``."""

    def __init__(
        self,
        dim: int,
        n_codebooks: int,
        codebook_size: int,
        decay: float = 0.99,
        restart_ratio: float = 0.1,
        kmeans_iters: int = 10,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if dim < 1 or n_codebooks < 1 or codebook_size < 2:
            raise ValueError("need dim >= 1, n_codebooks >= 1 and codebook_size >= 2")
        if not 0.0 <= decay < 1.0 or restart_ratio < 0.0 or kmeans_iters < 0:
            raise ValueError("need decay in [0, 1), restart_ratio >= 0 and kmeans_iters >= 0")
        self.dim, self.n_codebooks, self.codebook_size = dim, n_codebooks, codebook_size
        self.decay, self.restart_ratio, self.kmeans_iters = decay, restart_ratio, kmeans_iters
        g = torch.Generator().manual_seed(seed)
        codebooks = torch.randn(n_codebooks, codebook_size, dim, generator=g)
        self.register_buffer("codebooks", codebooks)  # e^k_i            [K, V, D]
        self.register_buffer("cluster_size", torch.ones(n_codebooks, codebook_size))  # N^k_i
        self.register_buffer("embed_sum", codebooks.clone())  # m^k_i = N^k_i e^k_i    [K, V, D]
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    # --- quantization ------------------------------------------------------------------------

    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:
        """Codes ``LongTensor [B, n_q, T]`` of ``z`` ``[B, D, T]`` (all ``K`` stages by default)."""
        n_q = self.n_codebooks if n_q is None else n_q
        if not 1 <= n_q <= self.n_codebooks:
            raise ValueError(f"n_q must lie in [1, {self.n_codebooks}], got {n_q}")
        residual, codes = _flatten(z), []
        for k in range(n_q):
            idx = _nearest(residual, self.codebooks[k])
            residual = residual - self.codebooks[k][idx]
            codes.append(idx)
        return torch.stack(codes, dim=1).reshape(z.shape[0], z.shape[2], n_q).transpose(1, 2)

    def decode(self, codes: Tensor) -> Tensor:
        """``z_q = sum_k e^k_{c_k}`` ``[B, D, T]`` from codes ``[B, k, T]`` (first ``k`` stages)."""
        if codes.ndim != 3 or codes.shape[1] > self.n_codebooks:
            raise ValueError(f"codes must be [B, k <= {self.n_codebooks}, T], got {tuple(codes.shape)}")
        if bool((codes < 0).any()) or bool((codes >= self.codebook_size).any()):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        z_q = sum(self.codebooks[k][codes[:, k]] for k in range(codes.shape[1]))
        return z_q.transpose(1, 2)

    def forward(self, z: Tensor, n_q: Tensor | int | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Quantize ``z`` ``[B, D, T]``; returns ``(z_q, codes [B, K, T], commit_loss)``.

        ``z_q`` is the straight-through ``z + sg[z_q - z]`` using the first ``n_q[b]`` stages of
        row ``b`` (``n_q``: None = all, an int, or a LongTensor ``[B]``; 0 gives ``z_q = 0``).
        ``codes`` always holds all ``K`` stages. In training mode the codebooks are updated (EMA,
        k-means on the first batch, dead-code restart) from the residuals of every row.
        """
        b, d, t = z.shape
        if d != self.dim:
            raise ValueError(f"expected {self.dim} latent channels, got {d}")
        if self.training and not bool(self.initialized):
            self.kmeans_init(z)
        active = _active_stages(n_q, b, self.n_codebooks, z.device)
        residual, codes, z_q = _flatten(z.detach()), [], torch.zeros_like(_flatten(z))
        row_active = active.repeat_interleave(t, dim=0)  # [B*T, K]
        for k in range(self.n_codebooks):
            idx = _nearest(residual, self.codebooks[k])
            quantized = self.codebooks[k][idx]
            if self.training:
                self._ema_update(k, residual, idx)
            z_q = z_q + row_active[:, k : k + 1] * quantized
            residual = residual - quantized
            codes.append(idx)
        z_q = z_q.reshape(b, t, d).transpose(1, 2)
        commit_loss = (z - z_q.detach()).pow(2).mean()
        codes_out = torch.stack(codes, dim=1).reshape(b, t, self.n_codebooks).transpose(1, 2)
        return z + (z_q - z).detach(), codes_out, commit_loss

    # --- codebook learning -------------------------------------------------------------------

    @torch.no_grad()
    def kmeans_init(self, z: Tensor) -> None:
        """Fit every stage by Lloyd iterations on the residuals of ``z`` ``[B, D, T]`` (in order)."""
        residual = _flatten(z.detach()).float()
        n = residual.shape[0]
        for k in range(self.n_codebooks):
            pick = torch.linspace(0, n - 1, self.codebook_size, device=z.device).round().long()
            centroids = residual[pick].clone()
            counts = torch.zeros(self.codebook_size, device=z.device)
            for _ in range(max(1, self.kmeans_iters)):
                idx = _nearest(residual, centroids)
                counts = torch.bincount(idx, minlength=self.codebook_size).float()
                sums = torch.zeros_like(centroids).index_add_(0, idx, residual)
                used = counts > 0
                centroids[used] = sums[used] / counts[used, None]
            self.codebooks[k] = centroids
            self.cluster_size[k] = counts
            self.embed_sum[k] = centroids * counts[:, None]
            residual = residual - centroids[_nearest(residual, centroids)]
        self.initialized.fill_(True)

    @torch.no_grad()
    def _ema_update(self, k: int, residual: Tensor, idx: Tensor) -> None:
        """EMA codebook step for stage ``k`` (van den Oord et al. 2017, App. A.1), then restarts."""
        counts = torch.bincount(idx, minlength=self.codebook_size).to(residual.dtype)
        sums = torch.zeros_like(self.codebooks[k]).index_add_(0, idx, residual)
        g = self.decay
        self.cluster_size[k].mul_(g).add_(counts, alpha=1 - g)
        self.embed_sum[k].mul_(g).add_(sums, alpha=1 - g)
        self.codebooks[k] = self.embed_sum[k] / self.cluster_size[k].clamp_min(1e-8)[:, None]
        self._restart_dead(k, residual, idx)

    @torch.no_grad()
    def _restart_dead(self, k: int, residual: Tensor, idx: Tensor) -> None:
        """Move rarely used codewords of stage ``k`` onto the worst-quantized batch residuals."""
        mean_usage = self.cluster_size[k].mean()
        dead = (self.cluster_size[k] < self.restart_ratio * mean_usage).nonzero().flatten()
        if dead.numel() == 0:
            return
        error = (residual - self.codebooks[k][idx]).pow(2).sum(-1)
        n = min(dead.numel(), residual.shape[0])
        worst = error.topk(n).indices
        dead = dead[self.cluster_size[k][dead].argsort()[:n]]
        self.codebooks[k][dead] = residual[worst]
        self.cluster_size[k][dead] = mean_usage
        self.embed_sum[k][dead] = residual[worst] * mean_usage
