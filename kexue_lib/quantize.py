"""Vector quantisation: nearest codeword, straight-through and rotation-trick estimators (P13).

A VQ layer replaces an encoder output ``z`` by its nearest codeword ``q`` and needs a rule
for sending gradients through that non-differentiable step. Every rule here is an
instance of the generalised straight-through estimator

    z_q = sg[G] z + sg[q - G z],

whose forward value is ``q`` and whose backward pass maps an upstream gradient ``g`` to
``G^T g``. ``G = I`` is the classic straight-through estimator (STE); the rotation trick of
Fifty et al. (arXiv:2410.06424) takes ``G = (|q|/|z|) R`` with ``R`` the minimal rotation
carrying the direction of ``z`` to the direction of ``q``, applied without ever forming a
``d x d`` matrix. All functions are batched over leading dimensions; the last dimension is
the feature dimension ``d``. Derived in P13.
"""
from __future__ import annotations

import torch
from torch import nn

from ._checks import check_int, check_real, check_tensor

__all__ = [
    "nearest_codeword",
    "straight_through",
    "generalized_straight_through",
    "rotation_matrix",
    "rotate_scale",
    "rotation_trick",
    "codebook_usage",
    "codebook_perplexity",
    "kmeans",
    "VectorQuantizer",
]

ESTIMATORS = ("ste", "rotation", "rotation_noscale")


def _check_generator(generator: object) -> torch.Generator:
    if generator is None:
        return torch.Generator(device="cpu").manual_seed(0)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    return generator


def _check_pair(z: object, q: object, zname: str = "z", qname: str = "q") -> None:
    check_tensor(z, zname, min_ndim=1)
    check_tensor(q, qname, min_ndim=1)
    if z.shape != q.shape:
        raise ValueError(f"{qname} must have the shape of {zname} {tuple(z.shape)}, got {tuple(q.shape)}")


def nearest_codeword(z: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index and value of the nearest codeword (Euclidean) for every vector in ``z``.

    Distances are expanded as

        |z - e_k|^2 = |z|^2 - 2 z.e_k + |e_k|^2,

    so the cost is one matrix product. Ties go to the lowest index (``argmin``). Derived in P13.

    Parameters
    ----------
    z : torch.Tensor
        Vectors to quantise, shape ``[..., d]``.
    codebook : torch.Tensor
        Codewords ``e_1 .. e_K`` as rows, shape ``[K, d]``.

    Returns
    -------
    tuple of torch.Tensor
        ``(indices, q)``: long indices of shape ``[...]`` and the codewords ``q`` of shape
        ``[..., d]`` (gathered from ``codebook``, so gradients flow into the codebook).
    """
    check_tensor(z, "z", min_ndim=1)
    check_tensor(codebook, "codebook", ndim=2)
    if codebook.shape[0] == 0:
        raise ValueError("codebook must have at least one row")
    if codebook.shape[1] != z.shape[-1]:
        raise ValueError(f"codebook must have {z.shape[-1]} columns to match z, got {codebook.shape[1]}")
    flat = z.detach().reshape(-1, z.shape[-1])
    e = codebook.detach()
    d2 = (flat * flat).sum(-1, keepdim=True) - 2 * flat @ e.T + (e * e).sum(-1)
    idx = d2.argmin(-1).reshape(z.shape[:-1])
    return idx, codebook[idx]


def straight_through(z: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Straight-through estimator ``z_q = z + sg[q - z]``: forward ``q``, backward identity.

    The gradient reaching ``z`` equals the gradient at ``z_q``; ``q`` receives none. Derived in P13.
    Shapes: ``z``, ``q`` and the result are ``[..., d]``.
    """
    _check_pair(z, q)
    return z + (q - z).detach()


def generalized_straight_through(z: torch.Tensor, q: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    """Generalised straight-through estimator with an arbitrary matrix ``G``.

        z_q = sg[G] z + sg[q - G z]

    Forward value ``q``; backward ``grad_z = G^T grad_{z_q}`` (the transpose: this is a
    vector-Jacobian product). ``G = I`` gives :func:`straight_through`. Derived in P13.

    Parameters
    ----------
    z : torch.Tensor
        Encoder outputs, shape ``[..., d]``.
    q : torch.Tensor
        Their codewords, shape ``[..., d]``.
    G : torch.Tensor
        Matrices, shape ``[d, d]`` or ``[..., d, d]`` (broadcast against the batch).

    Returns
    -------
    torch.Tensor
        ``z_q`` of shape ``[..., d]``.
    """
    _check_pair(z, q)
    check_tensor(G, "G", min_ndim=2)
    d = z.shape[-1]
    if G.shape[-2:] != (d, d):
        raise ValueError(f"G must end in ({d}, {d}), got shape {tuple(G.shape)}")
    Gd = G.detach()
    Gz = (Gd @ z.unsqueeze(-1)).squeeze(-1)
    return Gz + (q - Gz).detach()


def _unit(x: torch.Tensor, eps: float) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def rotation_matrix(u: torch.Tensor, v: torch.Tensor, *, eps: float = 1e-12) -> torch.Tensor:
    """Dense minimal rotation taking the direction of ``u`` to the direction of ``v``.

    With unit vectors ``a = u/|u|``, ``b = v/|v|`` and ``w = (a + b)/|a + b|``,

        R = I + 2 b a^T - 2 w w^T = I + 2 b a^T - (a + b)(a + b)^T / (1 + cos theta).

    ``R`` is orthogonal with determinant 1, maps ``a`` to ``b`` and is the identity on the
    orthogonal complement of ``span(a, b)``. Undefined for antiparallel inputs
    (``cos theta = -1``); ``eps`` only guards the division. Forms ``d x d`` matrices: meant
    for checks, use :func:`rotate_scale` in models. Derived in P13.

    Parameters
    ----------
    u, v : torch.Tensor
        Nonzero vectors, shape ``[..., d]``.
    eps : float
        Floor for the norms in the normalisations.

    Returns
    -------
    torch.Tensor
        Rotations of shape ``[..., d, d]``.
    """
    _check_pair(u, v, "u", "v")
    eps = check_real(eps, "eps", gt=0)
    a, b = _unit(u, eps), _unit(v, eps)
    w = _unit(a + b, eps)
    eye = torch.eye(u.shape[-1], device=u.device, dtype=u.dtype)
    return eye + 2 * b.unsqueeze(-1) * a.unsqueeze(-2) - 2 * w.unsqueeze(-1) * w.unsqueeze(-2)


def rotate_scale(x: torch.Tensor, z: torch.Tensor, q: torch.Tensor, *, scale: bool = True,
                 eps: float = 1e-12) -> torch.Tensor:
    """Apply ``G = (|q|/|z|) R`` (``R`` the minimal rotation from ``z`` to ``q``) to ``x``, matrix-free.

    With ``a = z/|z|``, ``b = q/|q|``, ``w = (a + b)/|a + b|``:

        G x = (|q|/|z|) (x - 2 (w.x) w + 2 (a.x) b).

    Costs ``O(d)`` per vector instead of ``O(d^2)``. Fully differentiable in all three
    arguments; the rotation trick calls it with ``z`` and ``q`` detached. With
    ``scale=False`` the factor ``|q|/|z|`` is dropped (``G = R``). Derived in P13.

    Parameters
    ----------
    x, z, q : torch.Tensor
        Shape ``[..., d]`` each; ``z`` and ``q`` nonzero and not antiparallel.
    scale : bool
        Include the norm ratio ``|q|/|z|``.
    eps : float
        Floor for the norms in the normalisations.

    Returns
    -------
    torch.Tensor
        ``G x`` of shape ``[..., d]``.
    """
    _check_pair(z, q)
    _check_pair(z, x, "z", "x")
    eps = check_real(eps, "eps", gt=0)
    zn = z.norm(dim=-1, keepdim=True).clamp_min(eps)
    qn = q.norm(dim=-1, keepdim=True).clamp_min(eps)
    a, b = z / zn, q / qn
    w = _unit(a + b, eps)
    out = x - 2 * (w * x).sum(-1, keepdim=True) * w + 2 * (a * x).sum(-1, keepdim=True) * b
    return out * (qn / zn) if scale else out


def rotation_trick(z: torch.Tensor, q: torch.Tensor, *, scale: bool = True, eps: float = 1e-12) -> torch.Tensor:
    """Rotation-trick estimator ``z_q = sg[G] z + sg[q - G z]`` with ``G = (|q|/|z|) R``.

    Forward value ``q`` (exactly ``G z = q`` up to rounding; the ``sg[q - G z]`` term removes
    the rounding, and is what keeps the forward value ``q`` when ``scale=False``). Backward,
    for an upstream gradient ``g``:

        grad_z = G^T g = (|q|/|z|) (g - 2 (w.g) w + 2 (b.g) a),

    with ``a, b, w`` as in :func:`rotate_scale`; ``q`` receives no gradient, as in the STE.
    The gradient grows like ``1/|z|`` near the origin, and the rotation is undefined when
    ``z`` and ``q`` point in opposite directions. Derived in P13 (after Fifty et al.,
    arXiv:2410.06424).

    Parameters
    ----------
    z : torch.Tensor
        Encoder outputs, shape ``[..., d]``.
    q : torch.Tensor
        Their codewords, shape ``[..., d]``.
    scale : bool
        Keep the norm ratio ``|q|/|z|`` (the paper's choice); ``False`` gives ``G = R``.
    eps : float
        Floor for the norms in the normalisations.

    Returns
    -------
    torch.Tensor
        ``z_q`` of shape ``[..., d]``.
    """
    _check_pair(z, q)
    Gz = rotate_scale(z, z.detach(), q.detach(), scale=scale, eps=eps)
    return Gz + (q - Gz).detach()


def codebook_usage(indices: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """Fraction of the ``num_embeddings`` codewords that occur in ``indices`` (a 0-d tensor).

    ``indices``: long tensor of any shape with values in ``[0, num_embeddings)``. Derived in P13.
    """
    counts = _counts(indices, num_embeddings)
    return (counts > 0).to(torch.float32).mean()


def codebook_perplexity(indices: torch.Tensor, num_embeddings: int) -> torch.Tensor:
    """Perplexity ``exp(-sum_k p_k log p_k)`` of the empirical code distribution (a 0-d tensor).

    Equals ``num_embeddings`` when all codes are used equally and 1 when one code takes
    everything. ``indices``: long tensor of any shape. Derived in P13.
    """
    counts = _counts(indices, num_embeddings).to(torch.float64)
    p = counts / counts.sum()
    ent = -(p * torch.log(p.clamp_min(1e-300))).sum()
    return torch.exp(ent)


def _counts(indices: object, num_embeddings: object) -> torch.Tensor:
    k = check_int(num_embeddings, "num_embeddings", ge=1)
    check_tensor(indices, "indices", floating=False)
    if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise TypeError(f"indices must have an integer dtype, got {indices.dtype}")
    if indices.numel() == 0:
        raise ValueError("indices must not be empty")
    if int(indices.min()) < 0 or int(indices.max()) >= k:
        raise ValueError(f"indices must lie in [0, {k}), got range [{int(indices.min())}, {int(indices.max())}]")
    return torch.bincount(indices.reshape(-1).long(), minlength=k)


def kmeans(x: torch.Tensor, num_clusters: int, *, iters: int = 20,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Lloyd's k-means: centroids of ``x`` (``[N, d]``), shape ``[num_clusters, d]``.

    Starts from ``num_clusters`` distinct rows of ``x`` drawn with ``generator`` (a CPU
    generator; default seed 0), then alternates nearest-centroid assignment and centroid
    means for ``iters`` rounds. A cluster that empties keeps its previous centroid. The mean
    squared distance to the nearest centroid never increases. Used to initialise a codebook
    on the first encoder outputs, the remedy discussed in P13.
    """
    check_tensor(x, "x", ndim=2)
    k = check_int(num_clusters, "num_clusters", ge=1, le=x.shape[0])
    iters = check_int(iters, "iters", ge=0)
    generator = _check_generator(generator)
    x = x.detach()
    perm = torch.randperm(x.shape[0], generator=generator)[:k].to(x.device)
    c = x[perm].clone()
    for _ in range(iters):          # sequential by nature; each round is vectorised
        idx, _ = nearest_codeword(x, c)
        sums = torch.zeros_like(c).index_add_(0, idx, x)
        cnt = torch.bincount(idx, minlength=k).to(x.dtype).unsqueeze(-1)
        c = torch.where(cnt > 0, sums / cnt.clamp_min(1), c)
    return c


class VectorQuantizer(nn.Module):
    """VQ layer with a learnable codebook and a choice of gradient estimator (P13).

    For encoder outputs ``z`` (``[..., embedding_dim]``) the forward pass returns
    ``(z_q, loss, indices)``, where ``z_q`` equals the nearest codeword ``q`` and

        loss = beta * mean|q - sg[z]|^2 + gamma * mean|z - sg[q]|^2

    (codebook term, which moves the codewords like k-means, plus commitment term, which
    pulls the encoder toward its codes; means over all elements). The gradient from ``z_q``
    back to ``z`` follows ``estimator``: ``'ste'`` (identity), ``'rotation'``
    (``(|q|/|z|) R^T``) or ``'rotation_noscale'`` (``R^T``).

    Parameters
    ----------
    num_embeddings : int
        Codebook size ``K``.
    embedding_dim : int
        Vector dimension ``d``.
    estimator : str
        ``'ste'``, ``'rotation'`` or ``'rotation_noscale'``.
    beta : float
        Weight of the codebook term.
    gamma : float
        Weight of the commitment term.
    init_scale : float
        Standard deviation of the Gaussian codebook initialisation.
    generator : torch.Generator or None
        CPU generator for the initialisation (default seed 0).
    device, dtype
        Where and in which dtype to create the codebook (PyTorch factory convention).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, estimator: str = "ste",
                 beta: float = 1.0, gamma: float = 0.25, init_scale: float = 1.0,
                 generator: torch.Generator | None = None, device=None, dtype=None) -> None:
        super().__init__()
        self.num_embeddings = check_int(num_embeddings, "num_embeddings", ge=1)
        self.embedding_dim = check_int(embedding_dim, "embedding_dim", ge=1)
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        self.estimator = estimator
        self.beta = check_real(beta, "beta", ge=0)
        self.gamma = check_real(gamma, "gamma", ge=0)
        init_scale = check_real(init_scale, "init_scale", gt=0)
        generator = _check_generator(generator)
        w = torch.randn(self.num_embeddings, self.embedding_dim, generator=generator, dtype=torch.float64)
        self.weight = nn.Parameter((init_scale * w).to(device=device, dtype=dtype or torch.get_default_dtype()))

    @torch.no_grad()
    def init_kmeans(self, z: torch.Tensor, *, iters: int = 20, generator: torch.Generator | None = None) -> None:
        """Overwrite the codebook with k-means centroids of the vectors ``z`` (``[..., d]``)."""
        check_tensor(z, "z", min_ndim=1)
        if z.shape[-1] != self.embedding_dim:
            raise ValueError(f"z must end in {self.embedding_dim}, got shape {tuple(z.shape)}")
        c = kmeans(z.reshape(-1, self.embedding_dim), self.num_embeddings, iters=iters, generator=generator)
        self.weight.copy_(c.to(self.weight.dtype))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantise ``z`` (``[..., d]``); return ``(z_q, loss, indices)`` as described above."""
        check_tensor(z, "z", min_ndim=1)
        if z.shape[-1] != self.embedding_dim:
            raise ValueError(f"z must end in {self.embedding_dim}, got shape {tuple(z.shape)}")
        idx, q = nearest_codeword(z, self.weight)
        loss = self.beta * (q - z.detach()).pow(2).mean() + self.gamma * (z - q.detach()).pow(2).mean()
        if self.estimator == "ste":
            zq = straight_through(z, q)
        else:
            zq = rotation_trick(z, q, scale=self.estimator == "rotation")
        return zq, loss, idx

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, estimator={self.estimator!r}, "
                f"beta={self.beta:g}, gamma={self.gamma:g}")
