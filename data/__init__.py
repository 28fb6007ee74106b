"""data: the text a run learns from. WikiText-2 or your text files for masked-LM fine-tuning; SST-2, IMDB, GLUE
or your CSV/TSV/JSONL/parquet files for classification and regression.

    import data
    splits = data.load_wikitext(data_dir=None)           # {"train"|"validation"|"test": {"lines", "source"}}
    blocks = data.build_blocks(lines, tokenizer, 128, cache_dir)   # (n, 128) ids: [CLS] ... [SEP]
    vocab = data.MaskingVocab.from_tokenizer(tokenizer)
    batch = data.mask_tokens(ids, vocab, data.seeded_generator(seed, epoch, step))  # {"input_ids", "labels"}
    fixed = data.eval_masks(blocks, vocab)                # the same masked positions for every run

    splits = data.load_labelled(data.DATASETS["rte"])    # {split: data.Split (texts, pairs, labels, source)}
    table = data.read_table("reviews.csv")               # a user's file: {column: values}, rows with their lines
    examples = data.encode_examples(texts, labels, tokenizer, 128, cache_dir, pairs=None)  # variable-length
    batches = data.bucketed_batches(examples.lengths, 32, data.seeded_generator(seed, epoch))
    batch = examples.batch(batches[0], pad_id)            # input_ids, attention_mask, labels (pairs: token_type_ids)

Files: files.py (hub or --data-dir), cache.py (token arrays on disk), wikitext.py (WikiText-2),
blocks.py (tokenise and pack), masking.py (BERT's 80/10/10), labelled.py (labelled examples and the split
policy), sentiment.py (SST-2, IMDB), glue.py (GLUE), tables.py (reading CSV/TSV/JSONL/parquet/text),
labels.py (class names, regression scores), user_files.py (--train-file and its columns), examples.py
(one sequence per example, pairs), buckets.py (batches of similar length).
"""

from data.blocks import build_blocks
from data.buckets import bucketed_batches, padding_fraction
from data.cache import default_cache_dir
from data.examples import Examples, encode_examples, truncate_pair
from data.files import DataError
from data.glue import GLUE
from data.labelled import Dataset, Split, load_labelled
from data.masking import IGNORE, MaskingVocab, eval_masks, mask_tokens, seed_of, seeded_generator
from data.sentiment import SENTIMENT
from data.tables import TEXT_FORMATS, read_table
from data.user_files import DataFiles
from data.wikitext import SPLITS, load_wikitext

DATASETS = {**SENTIMENT, **GLUE}  # the named classification and regression tasks: --task sst2, rte, stsb, ...

__all__ = [
    "DATASETS",
    "IGNORE",
    "SPLITS",
    "TEXT_FORMATS",
    "DataError",
    "DataFiles",
    "Dataset",
    "Examples",
    "MaskingVocab",
    "Split",
    "bucketed_batches",
    "build_blocks",
    "default_cache_dir",
    "encode_examples",
    "eval_masks",
    "load_labelled",
    "load_wikitext",
    "mask_tokens",
    "padding_fraction",
    "read_table",
    "seed_of",
    "seeded_generator",
    "truncate_pair",
]
