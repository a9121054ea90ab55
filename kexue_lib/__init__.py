"""kexue_lib: tested, device-agnostic PyTorch implementations behind the kexue-book notebooks.

Modules by topic (each public function's docstring names the post that derives it).

Core:

- :mod:`kexue_lib.device`          device choice, seeding, CPU-drawn random data
- :mod:`kexue_lib.plotting`        the book's matplotlib style
- :mod:`kexue_lib.widgets`         the one widget helper (``interact``, ``Slider``, ``Choice``)

Part 1, probability, losses and functions:

- :mod:`kexue_lib.probability`     softmax, Taylor-softmax, Perturb-Max, Gumbel-Max and surrogate losses (P01)
- :mod:`kexue_lib.sparsemax`       sparsemax, entmax-1.5 and alpha-entmax with their thresholds (P01)
- :mod:`kexue_lib.densities`       Fourier-series densities, CDF and sampling (P02)
- :mod:`kexue_lib.scaling`         scaling laws from the quantization hypothesis (P03)
- :mod:`kexue_lib.activations`     SquarePlus, SoftPlus and their derivatives (P08)
- :mod:`kexue_lib.approximation`   best uniform (min-max) approximation on a grid (P08)
- :mod:`kexue_lib.integrals`       Wallis integrals and their asymptotics (P15)
- :mod:`kexue_lib.losses`          multi-label softmax + cross-entropy with soft labels (P18), TaiLr (P31)
- :mod:`kexue_lib.similarity`      local versus global cosine similarity (P26)
- :mod:`kexue_lib.sparsity`        sparsity measures and the Hurley-Rickard criteria (P37)

Part 2, optimisation:

- :mod:`kexue_lib.optim`           Lion, Tiger and Signum optimizers, multi-tensor updates (P06, P22)
- :mod:`kexue_lib.schedules`       Amos-style learning-rate and decay schedules (P07)
- :mod:`kexue_lib.hypergradient`   exponentiated gradient and hypergradient step-size adaptation (P09)
- :mod:`kexue_lib.lora`            LoRA layers, gradients, random-projection variant, LoRA+ parameter groups (P10, P29)
- :mod:`kexue_lib.flows`           gradient flows, l_p steepest descent, Wasserstein/KL particle flows, Langevin (P11)
- :mod:`kexue_lib.crf`             vectorised linear-chain CRF: log Z, Viterbi, marginals, learning-rate multiplier (P14)

Part 3, attention and sequence models:

- :mod:`kexue_lib.attention`       masks, softmax and linear attention (P04)
- :mod:`kexue_lib.linalg`          effective and numerical rank, triangular log-determinants (P04)
- :mod:`kexue_lib.attention_scale` attention scale that maximises the gradient (P12)
- :mod:`kexue_lib.gau`             gated attention unit, softmax-plus, parameter and MAC counts (P17)
- :mod:`kexue_lib.positions`       RoPE, its scalings (PI, NTK, YaRN, log n, ReRoPE), biased scores (P17, P27, P35)
- :mod:`kexue_lib.recurrent`       linear scans (sequential and parallel), LRU/SLRU, RWKV forms (P23)
- :mod:`kexue_lib.concentration`   how concentrated attention rows can be (P25)
- :mod:`kexue_lib.online_attention` causal attention as a recurrence: online softmax, RNN views (P30)

Part 4, positions, tokens and quantisation:

- :mod:`kexue_lib.quantize`        vector quantisation: straight-through and rotation-trick estimators, VQ layer, k-means (P13)
- :mod:`kexue_lib.tokenize`        lattice tokenization: Viterbi, log Z, perfect and reservoir subword sampling (P24)
- :mod:`kexue_lib.patches`         patchify/unpatchify, lossless bits per token, VQ distortion on patches (P28)
- :mod:`kexue_lib.beta_base`       beta-base view of RoPE: mixed-radix digits, NTK-old/fixed/mixed scale factors (P34)

Part 5, generative models:

- :mod:`kexue_lib.scores`          Gaussian-mixture scores, (conditional) score matching, 1-D flows and W distances (P05, P32)
- :mod:`kexue_lib.gan`             GAN losses from the likelihood-ratio construction, optimal discriminators, f-divergences (P16)
- :mod:`kexue_lib.diffusion`       schedules (both conventions), forward process, DDPM/DDIM samplers, exact mixture denoisers (P19, P20)
- :mod:`kexue_lib.analytic_variance` optimal reverse variance (Analytic-DPM and Su's forms), clipping, corrected sampler (P21)
- :mod:`kexue_lib.rectified_flow`  rectified flow: exact mixture velocity, fixed-step samplers with NFE counts, straightness, reflow (P33)
- :mod:`kexue_lib.gan_flow`        GAN generator steps as a Wasserstein gradient flow: -D and regression losses, toy loop (P36)
"""
from .device import get_device, generator, rand, randn, seed_everything
from .plotting import use_style
from .widgets import Choice, Slider, interact

__version__ = "0.1.0"

__all__ = [
    "get_device", "generator", "rand", "randn", "seed_everything",
    "use_style", "Choice", "Slider", "interact", "__version__",
]
