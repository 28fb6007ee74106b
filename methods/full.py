"""Full fine-tuning: every weight trains. The reference row that every PEFT paper reports.

Devlin, Chang, Lee, Toutanova, "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", NAACL 2019, Section 4 and Appendix A.3: all parameters are fine-tuned end to end, with
AdamW at a small learning rate (2e-5 to 5e-5). LoRA (Hu et al. 2022, Table 2), QLoRA ("4-bit LoRA
matches 16-bit full fine-tuning"), SoRA, HiRA and DoRA all measure themselves against it.

What trains: everything, as transformers' run_glue.py does: the embeddings (word, position, segment),
every attention and feed-forward weight and bias, every LayerNorm, and the task head (BERT's pre-trained
pooler included; for masked LM the transform and the decoder, which is the word embedding, tied). Nothing
is wrapped: the model stays the plain architecture, so the run saves it as one transformers checkpoint
(config.json, model.safetensors) rather than an adapter.

To freeze a part, as some recipes do (the embeddings, the lower layers), turn its gradients off after
this: `methods.apply(model, "full"); model.embeddings.requires_grad_(False)` (or `model.layers[:4]`);
train.py trains whatever requires a gradient. Weight decay is applied to every trained tensor, as for the
adapters; BERT's own recipe spares biases and LayerNorm gains, a difference of ~1e-7 per step at 2e-5 x 0.01.

The cost, which is the point of the other methods: AdamW keeps two moments per trained weight, so
training holds about 4 copies of the model (weights, gradients, two moments), and a checkpoint for
--resume holds 3 (weights, two moments): about 1.3 GB for bert-base-uncased, against a few MB for LoRA.
"""

import torch.nn as nn

DEFAULT_LR = 2e-5  # peak AdamW learning rate when none is given: the BERT paper's range is 2e-5 to 5e-5


def train_everything(model: nn.Module) -> nn.Module:
    """Make every parameter of the model trainable, in place (see the module doc to freeze a part)."""
    return model.requires_grad_(True)
