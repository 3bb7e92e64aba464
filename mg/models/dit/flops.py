"""Model FLOPs of the transformer, from its configuration and the input sizes alone.

Counts the matrix multiplies (2 FLOPs per multiply-add), which is where nearly all the arithmetic is: projections,
attention scores and weighted sums, the patchify convolution (kernel = stride, so a matmul) and the output
projection. Norms, activations, softmax and additions are left out (a few percent at the sizes that matter). A
training step costs three forward passes (the backward computes gradients for activations and for weights).
"""
from mg.backends.ssd import CHUNK


def forward_flops(config, batch, video_tokens, text_tokens):
    """Forward matmul FLOPs for `batch` samples of `video_tokens` patches and `text_tokens` = {encoder: length}."""
    d, f = config.dim, config.ffn_dim
    pt, ph, pw = config.patch_size
    patch = pt * ph * pw * config.in_channels
    n, L = video_tokens, sum(text_tokens.values())
    per_sample = 2 * n * patch * d                                                      # patchify
    per_sample += sum(2 * length * config.text_encoders[k] * d for k, length in text_tokens.items())  # projector
    per_sample += 2 * (config.timestep_frequency_dim * d + d * d) + 2 * d * 6 * d + 2 * d * 2 * d  # t MLP, adaLN
    block = (2 * n * d * 3 * d + mixing_flops(config, n) + 2 * n * d * d  # self-attention (or TESA): qkv, mixing, out
             + 2 * n * d * d + 2 * L * d * 2 * d + 4 * n * L * d + 2 * n * d * d  # cross-attention: q, kv, attn, out
             + 2 * n * d * 2 * f + 2 * n * f * d)                   # SwiGLU
    per_sample += config.depth * block + 2 * n * d * patch          # blocks, output projection
    return batch * per_sample


def mixing_flops(config, n):
    """Forward FLOPs of mixing n tokens beyond the q/k/v and output projections: full attention's scores and
    weighted sums; or MATE's windowed attention (at most a full window of keys per query) plus its MA-branch
    (projections, and per direction the SSD scan's products: C B^T and its product with the values within chunks,
    the chunk states and their read-out; the scan over chunk states is left out)."""
    d = config.dim
    if config.attention == "full":
        return 4 * n * n * d
    window = config.mate_window[0] * config.mate_window[1] * config.mate_window[2]
    state, heads = config.mate_state_dim, d // config.mate_head_dim
    projections = 2 * n * d * (2 * d + 2 * (2 * state + heads)) + 2 * n * d * d
    scan = 2 * (2 * n * CHUNK * state + 2 * n * CHUNK * d + 4 * n * d * state)
    return 4 * n * min(window, n) * d + projections + scan


def training_flops(config, batch, video_tokens, text_tokens):
    """Forward + backward matmul FLOPs of one training step (3x the forward)."""
    return 3 * forward_flops(config, batch, video_tokens, text_tokens)
