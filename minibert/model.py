"""BERT, written out: a bidirectional Transformer encoder with a masked-language-model head.

Devlin, Chang, Lee, Toutanova, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", NAACL 2019. The encoder is the Transformer encoder of Vaswani et al. (2017, Section 3.1),
"post-LN": each sub-layer is followed by a residual add and a LayerNorm.

    input        x0 = LayerNorm(E_word[ids] + E_pos[t] + E_type[segment])          (BERT Section 3, Fig. 2)
    each block   a  = LayerNorm(x + Dropout(MultiHeadAttention(x)))
                 y  = LayerNorm(a + Dropout(W2 GELU(W1 a + b1) + b2))
    attention    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head)) V          (Vaswani et al., Eq. 1)
    MLM head     h = LayerNorm(GELU(W_t x + b_t));  logits = h E_word^T + b       (BERT Section 3.1, Task #1)

The MLM decoder has no weight of its own: it is the word-embedding matrix E_word, transposed ("tied"),
plus a bias per vocabulary entry. GELU is the exact one, x * Phi(x) with the Gaussian CDF Phi (erf).

DistilBERT (Sanh, Debut, Chaumond, Wolf, 2019) is this same network with 6 layers and no segment
embedding, so one implementation serves both; `config.type_vocab_size == 0` switches the segment
embedding off. Parameter *names* differ between the two Hugging Face checkpoints; weights.py maps them.

One optimisation, kept out of the classes above so that a first read meets the textbook: the MLM loss
scores only ~15% of the positions (the masked ones) and a classifier only [CLS], so `encode(keep=...)`
runs the last block's output only there (`last_block_at`, at the end of this file), and `mlm_loss` runs
the head, whose H x V matmul is the model's most expensive layer, only there too. Both are exact.
"""

import math
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from minibert.config import BertConfig
from minibert.dropout import Dropout, dropout

ACTIVATIONS = {
    "gelu": F.gelu,  # exact: x * Phi(x), Phi the standard normal CDF (computed with erf)
    "gelu_new": partial(F.gelu, approximate="tanh"),  # the tanh approximation some checkpoints use
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "relu": F.relu,
}


def explicit_attention(q, k, v, mask, dropout_p):
    """softmax(Q K^T / sqrt(d)) V, written out. Same result as F.scaled_dot_product_attention.

    q, k, v: (B, nh, T, hs). mask: (B, 1, 1, T) bool, True where a key may be attended to, or None.
    """
    q = q / math.sqrt(q.size(-1))  # scaling q rather than the scores: T / hs times fewer divisions
    scores = q @ k.transpose(-2, -1)  # Q K^T / sqrt(d): (B, nh, T, hs) @ (B, nh, hs, T) -> (B, nh, T, T)
    if mask is not None:
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)  # padding keys get ~zero weight
    probs = F.softmax(scores, dim=-1)  # (B, nh, T, T), each row sums to 1
    probs = dropout(probs, dropout_p)  # dropout_p is 0.0 outside training
    return probs @ v  # (B, nh, T, T) @ (B, nh, T, hs) -> (B, nh, T, hs)


class Embeddings(nn.Module):
    """x0 = LayerNorm(E_word[ids] + E_pos[t] + E_type[segment]), then dropout."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.word = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        # DistilBERT has no segment (token-type) embedding.
        self.token_type = nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size else None
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, input_ids, token_type_ids=None):
        B, T = input_ids.shape
        if T > self.position.num_embeddings:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings {self.position.num_embeddings}")
        positions = torch.arange(T, device=input_ids.device)  # (T,)
        x = self.word(input_ids) + self.position(positions)  # (B, T, H) + (T, H) -> (B, T, H)
        if self.token_type is not None:
            if token_type_ids is None:  # a single segment: every token is in segment 0
                x = x + self.token_type.weight[0]  # (B, T, H) + (H,)
            else:
                x = x + self.token_type(token_type_ids)  # (B, T, H)
        elif token_type_ids is not None:
            raise ValueError("this model has no token-type embedding (DistilBERT); pass token_type_ids=None")
        return self.dropout(self.norm(x))  # (B, T, H)


class SelfAttention(nn.Module):
    """Multi-head self-attention: project to Q, K, V, attend per head, project back (Vaswani et al. 3.2.2)."""

    def __init__(self, config: BertConfig):
        super().__init__()
        H = config.hidden_size
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)
        self.output = nn.Linear(H, H)
        self.num_heads = config.num_heads
        self.dropout_p = config.attention_dropout
        self.explicit = config.attention == "explicit"

    def forward(self, x, mask=None):
        """x: (B, T, H) -> (B, T, H). mask: (B, 1, 1, T) bool, True where a key may be attended to, or None."""
        return self.output(self.heads(x, mask))  # concatenated heads, projected back: (B, T, H) @ (H, H)

    def heads(self, x, mask=None):
        """Every head's attention output, side by side: (B, T, H) -> (B, T, H), before the output projection."""
        B, T, H = x.shape
        nh, hs = self.num_heads, H // self.num_heads
        # Split the H channels into nh heads of hs channels each.
        q = self.query(x).view(B, T, nh, hs).transpose(1, 2)  # (B, T, H) -> (B, T, nh, hs) -> (B, nh, T, hs)
        k = self.key(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = self.value(x).view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        dropout_p = self.dropout_p if self.training else 0.0
        # On the CPU, SDPA has no fused kernel with dropout: it falls back to the written-out path and draws
        # the mask with bernoulli_. Ours, with minibert/dropout.py's mask, is 2x faster there.
        if self.explicit or (dropout_p > 0 and x.device.type == "cpu"):
            y = explicit_attention(q, k, v, mask, dropout_p)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, H)  # (B, nh, T, hs) -> (B, T, nh, hs) -> (B, T, H): heads side by side


class Block(nn.Module):
    """One post-LN encoder block: attention and feed-forward, each with dropout, residual add, LayerNorm."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.attention = SelfAttention(config)
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.ffn_in = nn.Linear(config.hidden_size, config.intermediate_size)  # W1: H -> 4H
        self.ffn_out = nn.Linear(config.intermediate_size, config.hidden_size)  # W2: 4H -> H
        self.ffn_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = ACTIVATIONS[config.hidden_act]
        self.dropout = Dropout(config.hidden_dropout)

    def forward(self, x, mask=None):
        """x: (B, T, H) -> (B, T, H)."""
        a = self.attention_norm(x + self.dropout(self.attention(x, mask)))  # a = LN(x + Attn(x))
        return self.ffn_norm(a + self.dropout(self.ffn(a)))  # y = LN(a + FFN(a))   (B, T, H)

    def ffn(self, a):
        """FFN(a) = W2 GELU(W1 a + b1) + b2: (..., H) -> (..., 4H) -> (..., H)."""
        return self.ffn_out(self.act(self.ffn_in(a)))


class MLMHead(nn.Module):
    """h = LayerNorm(GELU(W_t x + b_t)); logits = h E_word^T + b, the decoder tied to the word embeddings."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.transform = nn.Linear(config.hidden_size, config.hidden_size)
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))  # the decoder's own bias, one per token
        self.act = ACTIVATIONS[config.hidden_act]

    def forward(self, x, word_embeddings):
        h = self.norm(self.act(self.transform(x)))  # (..., H)
        return F.linear(h, word_embeddings, self.bias)  # h E^T + b: (..., H) @ (H, V) -> (..., V)


class Encoder(nn.Module):
    """Embeddings and the stack of blocks: token ids -> one contextual vector per token. Task-agnostic:
    `Bert` (below) puts the masked-LM head on it, `minibert.classifier.BertClassifier` a classification head."""

    task = ""  # which head a subclass adds: selects that head's rows of the weight-name table (weights.py)

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.layers = nn.ModuleList(Block(config) for _ in range(config.num_layers))

    def _init_weights(self, module):
        """BERT's initialisation (truncated-normal-like N(0, 0.02), zero biases, unit LayerNorm).

        Only used for a model built from a config without weights, or for a head a checkpoint lacks.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                nn.init.zeros_(module.weight[module.padding_idx])
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, MLMHead):
            nn.init.zeros_(module.bias)

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, keep=None):
        """Final hidden states. input_ids (B, T) -> (B, T, H). attention_mask: (B, T), 1 = token, 0 = padding.

        keep: (B, T) bool; if given, the output only there, (N, H) in row-major order (`last_block_at`).
        """
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]  # (B, T) -> (B, 1, 1, T): broadcast over heads and queries
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        for block in self.layers[:-1]:
            x = block(x, mask)  # (B, T, H)
        if keep is None:
            return self.layers[-1](x, mask)  # (B, T, H)
        return last_block_at(self.layers[-1], x, mask, keep)  # (N, H)

    def num_parameters(self) -> int:
        """Parameters counted once each (the tied decoder is the word-embedding matrix, not a copy)."""
        return sum(p.numel() for p in self.parameters())


class Bert(Encoder):
    """The encoder plus its MLM head. Works for BERT and DistilBERT checkpoints alike."""

    task = "mlm"

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.head = MLMHead(config)
        self.apply(self._init_weights)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        """MLM logits at every position: (B, T) -> (B, T, V)."""
        x = self.encode(input_ids, attention_mask, token_type_ids)  # (B, T, H)
        return self.head(x, self.embeddings.word.weight)  # (B, T, V)

    def masked_logits(self, input_ids, labels, attention_mask=None, token_type_ids=None):
        """MLM logits only at the N positions where labels != -100: (B, T) -> (N, V), in row-major order.

        The head runs at those N positions only, (N, H) -> (N, V), instead of (B*T, H) -> (B*T, V).
        """
        selected = labels != -100  # (B, T) bool
        x = self.encode(input_ids, attention_mask, token_type_ids, keep=selected)  # (N, H)
        return self.head(x, self.embeddings.word.weight)  # (N, H) -> (N, V)

    def mlm_loss(self, input_ids, labels, attention_mask=None, token_type_ids=None):
        """Mean cross-entropy over the positions where labels != -100 (the head runs only there).

        A batch with no labelled position gives a zero loss (still part of the graph), not NaN.
        """
        logits = self.masked_logits(input_ids, labels, attention_mask, token_type_ids)  # (N, V)
        if logits.shape[0] == 0:
            return logits.sum()  # zero, with a gradient of zero
        return F.cross_entropy(logits, labels[labels != -100])  # mean over the N labelled tokens


def last_block_at(block: Block, x, mask, keep):
    """An optimisation, exact: block(x, mask)[keep], computing the block's output only at the kept positions.

    Attention still reads every position (each kept token attends to the whole sequence), but the output
    projection, the residuals, the LayerNorms and the feed-forward are per position, so they run at the N
    kept positions alone: for a classifier 1/T of the last block's feed-forward work, for masked LM ~15%.
    x: (B, T, H), keep: (B, T) bool -> (N, H).
    """
    residual = x[keep]  # (N, H), taken before attention reads x, as in Block.forward: the same gradient sums
    heads = block.attention.heads(x, mask)[keep]  # (B, T, H) -> (N, H)
    a = block.attention_norm(residual + block.dropout(block.attention.output(heads)))  # a = LN(x + Attn(x)), (N, H)
    return block.ffn_norm(a + block.dropout(block.ffn(a)))  # y = LN(a + FFN(a)), (N, H)
