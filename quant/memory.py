"""How many bytes a model really holds: every parameter and buffer, each storage counted once.

A quantised weight is counted at its true size (uint8 bytes and its scales), a tied tensor once.
For bert-base-uncased with QLoRA (every encoder linear and the MLM head's transform in NF4 with
double quantisation, the rest in bf16, LoRA r=8 on query/value in fp32):

    4-bit linears   12 * (4 * 768*768 + 2 * 768*3072) + 768*768 = 85.5 M weights * 4.127 bits   = 44.1 MB
    embeddings      (30522 + 512 + 2) * 768 values * 2 bytes (bf16; the word embeddings are also
                    the tied MLM decoder)                                                         = 47.7 MB
    biases, LayerNorms, MLM bias: about 0.19 M values * 2 bytes                                   =  0.4 MB
    LoRA            294,912 * 4 bytes (fp32)                                                      =  1.2 MB
    total                                                                                         ≈ 93 MB

against 438 MB in fp32. distilbert-base-uncased (6 layers, no token types): 22.4 + 47.7 + 0.2 + 0.6
≈ 71 MB. The embeddings are then two thirds of the model: quantising only the linears cannot go below.
"""

import torch.nn as nn


def model_bytes(model: nn.Module) -> int:
    """Bytes held by the model's parameters and buffers, each underlying storage counted once."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()
    return total
