"""Progress of the training loop (and of predict.py over a long file), fit for a terminal and for a log file.

On a terminal, a tqdm bar redrawn in place. When stderr is not a terminal (nohup, a batch scheduler, CI,
`2> log`), a redrawn bar writes a carriage-return frame per step into the file; there, instead, one plain
line every `every_s` seconds (and at the last step):

    step 120/300 (40%)  loss 0.4312  lr 2.40e-04  tokens/s 3,120  ETA 1m52s
"""

import sys
import time

from tqdm import tqdm

FORMATS = {"loss": ("loss", ".4f"), "lr": ("lr", ".2e"), "tokens_per_s": ("tokens/s", ",.0f"),
           "rows_per_s": ("rows/s", ",.0f")}  # fmt: skip  # figure -> (its name on the line, its format)


class Progress:
    def __init__(self, total: int, initial: int, desc: str, enabled: bool = True, every_s: float = 30.0, stream=None,
                 unit: str = "step"):  # fmt: skip
        self.stream, self.unit = stream or sys.stderr, unit
        self.total, self.step, self.enabled, self.every_s = total, initial, enabled, every_s
        self.interactive = self.stream.isatty()
        self.bar = None
        if enabled and self.interactive:
            self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=self.stream)
        self.start, self.start_step = time.monotonic(), initial
        self.last_line = self.start

    def update(self, **shown: float) -> None:
        """One step done; `shown`: the figures to show, e.g. loss=0.43, lr=2.4e-4, tokens_per_s=3120."""
        self.step += 1
        figures = [(FORMATS[key][0], format(value, FORMATS[key][1])) for key, value in shown.items()]
        if self.bar is not None:
            self.bar.set_postfix({name: value for name, value in figures})
            self.bar.update(1)
            return
        now = time.monotonic()
        if self.enabled and (now - self.last_line >= self.every_s or self.step == self.total):
            self.last_line = now
            per_step = (now - self.start) / max(1, self.step - self.start_step)
            eta = int(per_step * (self.total - self.step))
            shown_text = "".join(f"  {name} {value}" for name, value in figures)
            self.write(f"{self.unit} {self.step}/{self.total} ({100 * self.step / self.total:.0f}%){shown_text}  "
                       f"ETA {eta // 60}m{eta % 60:02d}s")  # fmt: skip

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
