"""training: the machinery around train.py's loop, one concern per file.

Files: device.py (bf16 autocast, peak memory), distributed.py (torchrun / DDP helpers),
checkpoints.py (save and resume), progress.py (a bar on a terminal, plain lines in a log file),
card.py (the run's model card).
"""
