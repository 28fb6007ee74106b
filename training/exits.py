"""How a run of train.py ends: an exit code for each way, one line on stderr, never a traceback for a mistake.

    0    done
    2    a usage or input mistake: one line naming it and the fix
    3    the loss or a gradient became NaN or infinite: the line names the last good checkpoint
    4    a file could not be written (disk full, no permission, read-only): the line names the file and the
         last good checkpoint, and --resume continues from it once the cause is fixed
    130  interrupted (Ctrl-C or SIGTERM) at any moment: in the loop a checkpoint is saved to --resume from
         (train.py); before or after it, one line says so

Every file is written atomically (complete or absent), so whichever way a run ends nothing is half-written.
"""

import signal
import sys
from pathlib import Path

from data.files import DataError
from methods.base import AdapterError
from minibert.errors import LoadError
from minibert.files import WriteError
from quant.nf4 import QuantError
from training.checkpoints import ResumeError, latest_intact
from training.device import DeviceError
from training.folder import FolderError

# The mistakes a user can make, each said in one line: exit code 2 (evaluate.py, predict.py, merge.py and
# analyze.py catch the same ones).
USER_ERRORS = (LoadError, AdapterError, DataError, QuantError, ResumeError, DeviceError, FolderError)


class UsageError(Exception):
    """A bad command line or output directory; printed as one line, exit code 2."""


def exit_code(fine_tune, args) -> int:
    """fine_tune(args), with every way it can end turned into its exit code and one line (see the module doc)."""
    previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM like Ctrl-C
    try:
        return fine_tune(args)
    except KeyboardInterrupt:  # before the loop (loading, tokenising) or after it (testing, writing results)
        good = latest_intact(Path(args.output_dir)) if args.output_dir else None
        resume = f"continue from {good} with the same command plus --resume" if good else "run the command again"
        print(f"interrupted: nothing is half-written; {resume}", file=sys.stderr)
        return 130
    except (UsageError, *USER_ERRORS) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WriteError as e:
        good = latest_intact(Path(args.output_dir)) if args.output_dir else None  # fine_tune() fills in the default
        resume = f"resume from {good} by rerunning the same command with --resume" if good else "no checkpoint yet"
        print(f"error: {e}. Free the space (or fix the permissions); {resume}", file=sys.stderr)
        return 4
    finally:
        signal.signal(signal.SIGTERM, previous_handler)


def diverged(error: FloatingPointError, out_dir: Path) -> int:
    """A loss or gradient that became NaN or infinite: one line naming what is kept; exit code 3."""
    good = latest_intact(out_dir)
    kept = f"the last good checkpoint is kept: {good}" if good else "no checkpoint had been saved yet"
    print(f"error: {error}; stopping ({kept}). Try a lower --lr", file=sys.stderr)
    return 3
