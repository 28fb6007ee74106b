"""The run folder: one training at a time writes in it, and a run that fails before writing anything
leaves no empty folder behind.

Two trainings started into the same --output-dir at the same moment would both pass the check "does it
already hold a run?" and then write over each other: one run lost without a word, the log of both mixed.
So train.py takes a lock on <output-dir>/.lock before that check, with `fcntl.flock`, an advisory lock of
the operating system. The second run finds it taken and stops with one line naming the process that holds
it. The operating system lets go of a flock when its process ends, however it ends: a run killed with
SIGKILL leaves the file behind but not the lock, so `--resume` after a crash is never blocked by a stale
lock, and no one has to delete anything by hand.

The lock file is removed when the run ends. Removing a lock file opens a small race (a second process
opened the old file just before it was removed and locks it after): so a process that got the lock
checks that the file it locked is still the one at the path, and tries again if not.

A folder this run created is removed again if the run fails before writing its first file (a bad flag
found while loading, Ctrl-C while tokenising): a failed command leaves nothing, as it found nothing.
fcntl is POSIX: on Windows there is no lock (and nothing else changes).
"""

import os
import shutil
from pathlib import Path

from minibert.files import folder_problem

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK = ".lock"


class FolderError(Exception):
    """The folder cannot be used: a file, not writable, or in use by another training (named)."""


def output_dir(args, task) -> Path:
    """--output-dir, or by default runs/<method>-<task>-<model>[-seed<N>] (written back into args)."""
    model_name = args.model.rstrip("/").split("/")[-1]
    seed = f"-seed{args.seed}" if args.seed else ""  # two seeds never share a directory
    out_dir = Path(args.output_dir or f"runs/{args.method}-{task.name}-{model_name}{seed}")
    args.output_dir = str(out_dir)
    return out_dir


def refuse_a_run_there(out_dir: Path, resume: bool) -> None:
    """Without --resume, a folder that holds a run (finished, or with checkpoints) is never written over."""
    if not resume and ((out_dir / "metrics.json").exists() or (out_dir / "checkpoints").exists()):
        raise FolderError(
            f"{out_dir} already holds a run; pass --resume to continue it, or choose another --output-dir"
        )


class RunFolder:
    """`with RunFolder(out_dir):` creates the folder if need be and holds its lock until the block ends;
    on the way out it removes the lock, and the folder too if this run made it and wrote nothing in it."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.created = False  # whether this run made the folder
        self.fd = None  # the locked file's descriptor

    def __enter__(self) -> "RunFolder":
        self.created = not self.path.exists()
        problem = folder_problem(self.path)
        if problem is not None:
            self.__exit__()
            raise FolderError(f"--output-dir {self.path}: {problem}; choose another")
        if fcntl is not None:
            self.fd = self._lock()
        return self

    def _lock(self) -> int:
        lock = self.path / LOCK
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise FolderError(f"--output-dir {self.path} is in use by another training (process {holder}); "
                                  "wait for it to end, or choose another --output-dir") from None  # fmt: skip
            if lock.exists() and os.stat(lock).st_ino == os.fstat(fd).st_ino:  # still the file at the path
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                return fd
            os.close(fd)  # it was removed while we opened it (see the module doc): lock the new one

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            (self.path / LOCK).unlink(missing_ok=True)  # while still holding it
            os.close(self.fd)  # lets go of the lock
            self.fd = None
        if self.created and self.path.is_dir() and not any(self.path.iterdir()):
            shutil.rmtree(self.path, ignore_errors=True)
