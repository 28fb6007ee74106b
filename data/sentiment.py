"""SST-2 and IMDB: binary sentiment classification, the two classification tasks of the published comparison.

SST-2: Socher, Perelygin, Wu, Chuang, Manning, Ng, Potts, "Recursive Deep Models for Semantic
Compositionality Over a Sentiment Treebank", EMNLP 2013; the binary sentence task of GLUE (Wang et al.,
ICLR 2019). 67,349 training sentences from movie reviews, 872 validation, 1,821 test (labels hidden).
IMDB: Maas, Daly, Pham, Huang, Ng, Potts, "Learning Word Vectors for Sentiment Analysis", ACL 2011:
25,000 training and 25,000 test reviews, half positive, often longer than BERT's 512 tokens.

Split policy (data/labelled.py): SST-2's test set is its official validation split (the test labels are
hidden), IMDB's its official test split; the validation set is a fixed slice of the training split, 872
sentences for SST-2 (the size of its official validation split), 1,000 reviews for IMDB.
"""

from data.labelled import Dataset

SENTIMENT = {
    "sst2": Dataset(
        name="sst2",
        title="SST-2 (sentiment classification)",
        repo="stanfordnlp/sst2",
        train_file="data/train-00000-of-00001.parquet",
        test_files={"test": "data/validation-00000-of-00001.parquet"},  # the hidden-label test file is never read
        text_column="sentence",
        pair_column=None,
        label_names=("negative", "positive"),
        metrics=("accuracy", "f1", "macro_f1"),
        max_seq_len=128,
        validation_size=872,
    ),
    "imdb": Dataset(
        name="imdb",
        title="IMDB (sentiment classification)",
        repo="stanfordnlp/imdb",
        train_file="plain_text/train-00000-of-00001.parquet",
        test_files={"test": "plain_text/test-00000-of-00001.parquet"},
        text_column="text",
        pair_column=None,
        label_names=("negative", "positive"),
        metrics=("accuracy", "f1", "macro_f1"),
        max_seq_len=512,
        validation_size=1000,
    ),
}
