"""BERT's masked-language-model corruption.

Devlin et al. (2019), Section 3.1 "Task #1: Masked LM": 15% of the token positions are chosen for
prediction; a chosen token is replaced by [MASK] 80% of the time, by a random token 10% of the time,
and left unchanged 10% of the time (so the model cannot assume that an unmasked token is correct).
The label is the original token at chosen positions and -100 (ignored) everywhere else. [CLS], [SEP]
and the other special tokens are never chosen.

Masks are drawn from an explicit torch.Generator, never from the global random state:
  - training: a generator seeded with (seed, epoch, step), so each epoch sees fresh masks and a resumed
    run draws exactly the masks it would have drawn without the interruption;
  - evaluation: one generator with a fixed seed for the whole split, so every method and every run is
    scored on exactly the same masked positions.
"""

import hashlib
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer

MLM_PROBABILITY = 0.15  # fraction of (non-special) tokens chosen for prediction
IGNORE = -100  # label of positions that are not predicted (F.cross_entropy's ignore_index)
EVAL_SEED = 1234  # the one seed of the evaluation masks, whatever --seed a run used


@dataclass
class MaskingVocab:
    size: int  # number of token ids; random replacements are drawn uniformly from all of them
    mask_id: int  # id of [MASK]
    special_ids: list[int]  # ids never chosen for prediction: [CLS], [SEP], [PAD], [UNK], [MASK]

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> "MaskingVocab":
        special = [i for i, token in tokenizer.get_added_tokens_decoder().items() if token.special]
        return cls(tokenizer.get_vocab_size(), tokenizer.token_to_id("[MASK]"), sorted(special))


def mask_tokens(input_ids: torch.Tensor, vocab: MaskingVocab, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """{"input_ids": corrupted copy, "labels": originals at chosen positions, -100 elsewhere}. (B, T) each."""
    chosen = torch.rand(input_ids.shape, generator=generator) < MLM_PROBABILITY  # (B, T): ~15% of positions
    chosen &= ~torch.isin(input_ids, torch.tensor(vocab.special_ids))  # never [CLS], [SEP], [PAD], ...
    labels = torch.where(chosen, input_ids, IGNORE)
    action = torch.rand(input_ids.shape, generator=generator)  # one draw decides what a chosen token becomes
    to_mask = chosen & (action < 0.8)  # 80%: [MASK]
    to_random = chosen & (action >= 0.8) & (action < 0.9)  # 10%: a random token; the last 10% stay as they are
    random_tokens = torch.randint(vocab.size, input_ids.shape, generator=generator)
    corrupted = torch.where(to_mask, vocab.mask_id, input_ids)
    corrupted = torch.where(to_random, random_tokens, corrupted)
    return {"input_ids": corrupted, "labels": labels}


def seed_of(*key: int) -> int:
    """A 63-bit seed that is a pure function of the key, e.g. (seed, epoch, step) for one training step."""
    digest = hashlib.sha256(repr(key).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seeded_generator(*key: int) -> torch.Generator:
    """A generator that is a pure function of the key (see seed_of)."""
    return torch.Generator().manual_seed(seed_of(*key))


def eval_masks(blocks: torch.Tensor, vocab: MaskingVocab) -> dict[str, torch.Tensor]:
    """The fixed masks of an evaluation split: the same positions for every method and every run."""
    return mask_tokens(blocks, vocab, seeded_generator(EVAL_SEED))
