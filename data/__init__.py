"""data: WikiText-2 for masked-language-model fine-tuning.

    import data
    splits = data.load_wikitext(data_dir=None)           # {"train"|"validation"|"test": {"lines", "source"}}
    blocks = data.build_blocks(lines, tokenizer, 128, cache_dir)   # (n, 128) ids: [CLS] ... [SEP]
    vocab = data.MaskingVocab.from_tokenizer(tokenizer)
    batch = data.mask_tokens(ids, vocab, data.seeded_generator(seed, epoch, step))  # {"input_ids", "labels"}
    fixed = data.eval_masks(blocks, vocab)                # the same masked positions for every run

Files: wikitext.py (download or read), blocks.py (tokenise and pack), masking.py (BERT's 80/10/10).
"""

from data.blocks import build_blocks, default_cache_dir
from data.masking import IGNORE, MaskingVocab, eval_masks, mask_tokens, seeded_generator
from data.wikitext import SPLITS, DataError, load_wikitext

__all__ = [
    "IGNORE",
    "SPLITS",
    "DataError",
    "MaskingVocab",
    "build_blocks",
    "default_cache_dir",
    "eval_masks",
    "load_wikitext",
    "mask_tokens",
    "seeded_generator",
]
