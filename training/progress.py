"""Progress of the training loop, fit for a terminal and for a log file.

On a terminal, a tqdm bar redrawn in place. When stderr is not a terminal (nohup, a batch scheduler, CI,
`2> log`), a redrawn bar writes a carriage-return frame per step into the file; there, instead, one plain
line every `every_s` seconds (and at the last step):

    step 120/300 (40%)  loss 0.4312  lr 2.40e-04  tokens/s 3,120  ETA 1m52s
"""

import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True, every_s: float = 30.0, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.step, self.enabled, self.every_s = total, initial, enabled, every_s
        self.interactive = self.stream.isatty()
        self.bar = None
        if enabled and self.interactive:
            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=self.stream)
        self.start, self.start_step = time.monotonic(), initial
        self.last_line = self.start

    def update(self, loss: float, lr: float, tokens_per_s: float) -> None:
        """One optimizer step done."""
        self.step += 1
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_s:,.0f}")
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.enabled and (now - self.last_line >= self.every_s or self.step == self.total):
            self.last_line = now
            per_step = (now - self.start) / max(1, self.step - self.start_step)
            eta = int(per_step * (self.total - self.step))
            self.write(
                f"step {self.step}/{self.total} ({100 * self.step / self.total:.0f}%)  loss {loss:.4f}  "
                f"lr {lr:.2e}  tokens/s {tokens_per_s:,.0f}  ETA {eta // 60}m{eta % 60:02d}s"
            )

    def write(self, message: str) -> None:
        """A line of its own, above the bar on a terminal."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
