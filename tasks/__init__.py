"""tasks: what a run learns. Each task is its data, its objective and its metrics; train.py runs one
loop for all of them, evaluate.py and predict.py use the same objects.

    task = tasks.get("sst2")                               # "wikitext2" (default), "sst2" or "imdb"
    model = task.load_model("bert-base-uncased", dtype=None, device="cpu")   # with this task's head
    task.load_data(tokenizer, data_dir, cache_dir, max_seq_len)            # reads and tokenises the splits
    batch = task.train_batch(seed, epoch, index, global_batch)             # dict of tensors, seeded
    loss = task.loss(model, batch)                         # mean over task.count(batch) tokens or examples
    result = task.evaluate(model, "validation", batch_size, device)        # {"loss", ...metrics}

Files: masked_lm.py (WikiText-2), classification.py (SST-2, IMDB), metrics.py (accuracy, F1).
"""

from data.sentiment import DATASETS
from tasks.classification import SentimentClassification
from tasks.masked_lm import MaskedLM

TASKS = ("wikitext2", *DATASETS)  # the --task choices


def get(name: str) -> MaskedLM | SentimentClassification:
    if name == MaskedLM.name:
        return MaskedLM()
    if name in DATASETS:
        return SentimentClassification(DATASETS[name])
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
