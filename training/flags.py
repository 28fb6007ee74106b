"""The kinds of number a command-line flag takes, checked where argparse reads them.

A flag's value is checked once, by its type, in every script alike: `--batch-size 0` or `--lr nan` is one
line of argparse's ("argument --lr: ...") and exit 2, before any work, rather than a traceback from deep
inside a loop (`range() arg 3 must not be zero`) or a run that trains on nonsense. NaN and infinity are
refused by every float type: `nan <= 0` is False, so a plain `> 0` check would let NaN through.

    p.add_argument("--batch-size", type=positive_int, ...)        # 1, 2, ...
    p.add_argument("--eval-every", type=non_negative_int, ...)    # 0, 1, ...  (0: a meaning of its own)
    p.add_argument("--lr", type=positive_float, ...)              # finite and > 0
    p.add_argument("--weight-decay", type=non_negative_float, ...)   # finite and >= 0
    p.add_argument("--dropout", type=probability, ...)            # 0 <= p < 1
"""

import argparse
import math


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r}: a number must be finite")
    return value


def _checked(parse, ok, rule: str):
    """A flag type: the text parsed by `parse`, then refused unless ok(value), with `rule` said."""

    def check(text: str):
        value = parse(text)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return check


positive_int = _checked(_integer, lambda n: n >= 1, "must be at least 1")
non_negative_int = _checked(_integer, lambda n: n >= 0, "must be 0 or more")
positive_float = _checked(_finite, lambda x: x > 0, "must be greater than 0")
non_negative_float = _checked(_finite, lambda x: x >= 0, "must be 0 or more")
probability = _checked(_finite, lambda x: 0 <= x < 1, "must be at least 0 and below 1")
