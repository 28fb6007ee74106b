"""minibert: a hand-written BERT / DistilBERT encoder with a masked-LM or classification head,
loading Hugging Face checkpoints.

    import minibert
    model = minibert.from_pretrained("bert-base-uncased")   # hub repo id, or a local directory
    tok = minibert.load_tokenizer("bert-base-uncased")      # a tokenizers.Tokenizer
    logits = model(input_ids, attention_mask=None, token_type_ids=None)  # (B, T, vocab)
    loss = model.mlm_loss(input_ids, labels, attention_mask=None)        # mean CE over labels != -100
    clf = minibert.from_pretrained("bert-base-uncased", num_labels=2)    # a sequence classifier
    class_logits = clf(input_ids, attention_mask=None, token_type_ids=None)  # (B, 2); pairs: segment ids
    reg = minibert.from_pretrained("bert-base-uncased", num_labels=1)    # regression: one score, (B, 1)

Files: config.py (hyper-parameters), model.py (the encoder and MLM head), classifier.py (the
classification head), weights.py (checkpoint names -> ours), save.py (ours -> a transformers checkpoint),
hub.py (local directory or HF cache),
tokenizer.py (WordPiece), errors.py (LoadError).
"""

from minibert.classifier import BertClassifier
from minibert.config import BertConfig
from minibert.errors import LoadError
from minibert.model import Bert
from minibert.tokenizer import load_tokenizer
from minibert.weights import from_pretrained

__all__ = ["Bert", "BertClassifier", "BertConfig", "LoadError", "from_pretrained", "load_tokenizer"]
