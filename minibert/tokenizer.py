"""BERT's WordPiece tokenizer, as a `tokenizers.Tokenizer` (the fast Rust implementation).

Devlin et al. (2019), Section 3 "Input/Output Representations": WordPiece embeddings (Wu et al., 2016)
with a 30,000-token vocabulary; every sequence starts with [CLS], and [SEP] ends each segment.

The pipeline, the same as Hugging Face's BertTokenizerFast:
  1. normalise: clean control characters, put spaces around CJK characters, and for an uncased
     model lower-case and strip accents ("Café" -> "cafe");
  2. pre-tokenise: split on whitespace and punctuation ("don't" -> "don", "'", "t");
  3. WordPiece: greedy longest-match-first into vocabulary pieces ("unaffable" -> "una", "##ff", "##able"),
     a word with no split into known pieces -> [UNK];
  4. post-process: `encode("a")` gives [CLS] a [SEP]; `encode("a", "b")` gives [CLS] a [SEP] b [SEP]
     with type ids 0 for the first segment and 1 for the second. Pass add_special_tokens=False to
     `encode` for the bare pieces (data/ does this when it packs text into blocks itself).

A model that ships `tokenizer.json` is loaded from it, with any padding or truncation it configures switched
off (data/ pads and truncates itself). One with only `vocab.txt` gets the pipeline
above built from the vocabulary; it is lower-cased unless `tokenizer_config.json` says do_lower_case: false.
"""

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from minibert.errors import LoadError
from minibert.hub import read_json_object, tokenizer_files


def load_tokenizer(name_or_path: str) -> Tokenizer:
    """The tokenizer of a model directory or hub repo id (from tokenizer.json, else vocab.txt)."""
    files = tokenizer_files(name_or_path)
    if files.tokenizer_json is not None:
        try:
            tok = Tokenizer.from_file(str(files.tokenizer_json))
        except Exception as e:  # tokenizers raises a plain Exception for a malformed file
            raise LoadError(f"{files.tokenizer_json}: not a valid tokenizer.json ({e})") from None
        # Some files fix a padding and truncation length (sentence-transformers' pad every text to 128). data/
        # packs, pads and truncates itself, and needs each text's own pieces: switch both off.
        tok.no_padding()
        tok.no_truncation()
        return tok
    lowercase = True
    if files.tokenizer_config is not None:
        lowercase = bool(read_json_object(files.tokenizer_config).get("do_lower_case", True))
    return wordpiece_tokenizer(str(files.vocab), lowercase=lowercase)


def wordpiece_tokenizer(vocab_path: str, lowercase: bool = True) -> Tokenizer:
    """Build BERT's tokenizer from a vocab.txt (one piece per line; the line number is the id)."""
    try:
        vocab = WordPiece.read_file(vocab_path)
    except Exception as e:
        raise LoadError(f"{vocab_path}: cannot read the WordPiece vocabulary ({e})") from None
    missing = [t for t in ("[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]") if t not in vocab]
    if missing:
        raise LoadError(f"{vocab_path}: a BERT vocabulary needs the special tokens {missing}")
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    # strip_accents=None follows `lowercase`, as in BERT: uncased models also drop accents.
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[cls, sep]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])  # never split or lower-cased
    return tok
