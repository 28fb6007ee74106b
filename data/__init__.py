"""data: WikiText-2 for masked-language-model fine-tuning; SST-2 and IMDB for sentiment classification.

    import data
    splits = data.load_wikitext(data_dir=None)           # {"train"|"validation"|"test": {"lines", "source"}}
    blocks = data.build_blocks(lines, tokenizer, 128, cache_dir)   # (n, 128) ids: [CLS] ... [SEP]
    vocab = data.MaskingVocab.from_tokenizer(tokenizer)
    batch = data.mask_tokens(ids, vocab, data.seeded_generator(seed, epoch, step))  # {"input_ids", "labels"}
    fixed = data.eval_masks(blocks, vocab)                # the same masked positions for every run

    splits = data.load_sentiment(data.DATASETS["sst2"])   # {split: {"texts", "labels", "source"}}
    examples = data.encode_examples(texts, labels, tokenizer, 128, cache_dir)  # variable-length sequences
    batches = data.bucketed_batches(examples.lengths, 32, data.seeded_generator(seed, epoch))
    batch = examples.batch(batches[0], pad_id)            # {"input_ids", "attention_mask", "labels"}

Files: files.py (hub or --data-dir), cache.py (token arrays on disk), wikitext.py (WikiText-2),
blocks.py (tokenise and pack), masking.py (BERT's 80/10/10), sentiment.py (SST-2, IMDB and their splits),
examples.py (one sequence per example), buckets.py (batches of similar length).
"""

from data.blocks import build_blocks
from data.buckets import bucketed_batches, padding_fraction
from data.cache import default_cache_dir
from data.examples import Examples, encode_examples
from data.files import DataError
from data.masking import IGNORE, MaskingVocab, eval_masks, mask_tokens, seed_of, seeded_generator
from data.sentiment import DATASETS, load_sentiment
from data.wikitext import SPLITS, load_wikitext

__all__ = [
    "DATASETS",
    "IGNORE",
    "SPLITS",
    "DataError",
    "Examples",
    "MaskingVocab",
    "bucketed_batches",
    "build_blocks",
    "default_cache_dir",
    "encode_examples",
    "eval_masks",
    "load_sentiment",
    "load_wikitext",
    "mask_tokens",
    "padding_fraction",
    "seed_of",
    "seeded_generator",
]
