"""Writing files so that nothing is ever half-written, and a failed write says what failed and where.

    write_atomically(path, write)   write(tmp) into a temporary file beside `path`, fsync it, rename it
                                    over `path` (os.replace: atomic on POSIX), fsync the folder. A crash,
                                    a full disk or a kill leaves the old file or the new one, never a
                                    mixture; a power cut too, once the call has returned.

Why both fsyncs: a rename is atomic for the processes that look at the folder, but the kernel may write
the rename to disk before the file's data (ext4's delayed allocation did exactly that), so after a
power cut the new name could point at an empty file. fsync(file) before the rename puts the data on the
disk first; fsync(folder) after it makes the rename itself durable. A folder cannot be opened for fsync
on every system (Windows): there that step is skipped. An appended log line (`append_line`) is not
renamed; its reader skips a last line cut short, and train.py fsyncs the log at every checkpoint (`sync`).

The temporary file comes from mkstemp, which creates it with mode 0600; before the rename it gets the
mode a plain open() would have given it, 0666 minus the umask (0644 under the usual umask 022), so that on
a shared machine others can read the adapters and results as they can any file the user makes.
Temporary directories (a checkpoint being written) likewise get 0777 minus the umask.

Any failure while writing (no space left, no permission, a read-only file system, and the errors that
libraries raise for them, e.g. safetensors' SafetensorError) removes the temporary file and raises
WriteError, whose message names the file and the cause, so a script can print it as one line.
"""

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


class WriteError(Exception):
    """A file could not be written; `path` is the file, the message names it and the cause."""

    def __init__(self, path, cause: BaseException):
        self.path = Path(path)
        detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        super().__init__(f"could not write {self.path}: {detail}")


def umask() -> int:
    current = os.umask(0)  # the only way to read it is to set it; put it back at once
    os.umask(current)
    return current


def write_atomically(path, write: Callable[[str], None]) -> None:
    """write(tmp_path), then rename over `path`, with the mode a new file gets (see the module doc)."""
    path = Path(path)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask())
        sync(tmp)  # the data on disk before the name points at it
        os.replace(tmp, path)
        sync_folder(path.parent)  # the rename itself on disk
    except Exception as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise WriteError(path, e) from None
    except BaseException:  # KeyboardInterrupt: clean up, and let it through as it is
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise


def folder_problem(path) -> str | None:
    """Why `path` cannot be an output folder, or None; the folder is made if need be (scripts check this
    before any work, so that a bad --output-dir costs nothing)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return "a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()  # can we create files there?
    except OSError as e:
        return f"cannot write there ({e.strerror or e})"
    return None


def sync(path) -> None:
    """fsync a file: its data and size on the disk, not only in the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_folder(path) -> None:
    """fsync a folder, which makes the names created, renamed or removed in it durable; skipped where a
    folder cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder: nothing more can be done there
        pass
    finally:
        os.close(fd)


def write_text(path, text: str) -> None:
    write_atomically(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def append_line(path, line: str) -> None:
    """Append one line (a log). A failure raises WriteError; a reader must skip a cut-off last line."""
    try:
        with Path(path).open("a", encoding="utf-8") as f:
            f.write(line + "\n")
    except OSError as e:
        raise WriteError(path, e) from None


def sync_log(path) -> None:
    """fsync an appended log, so that its lines so far survive a power cut (train.py: at every checkpoint)."""
    try:
        if Path(path).exists():
            sync(path)
    except OSError as e:
        raise WriteError(path, e) from None


def write_directory_atomically(path, fill: Callable[[Path], None]) -> None:
    """fill(tmp_dir) with files, then rename the directory to `path`: complete or absent. fill should
    write with write_file(...) so that a failure names the file."""
    path = Path(path)
    tmp = None
    try:
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
        fill(tmp)
        os.chmod(tmp, 0o777 & ~umask())
        sync_folder(tmp)  # its files' names (write_file synced their data)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        sync_folder(path.parent)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and not isinstance(e, WriteError):
            raise WriteError(path, e) from None
        raise  # a WriteError from fill names its own file; KeyboardInterrupt goes through


def write_file(path, write: Callable[[str], None]) -> None:
    """write(path) for a file inside a directory being written atomically; a failure names the file.
    The file gets a new file's mode whatever the writer did (safetensors writes 0600 files)."""
    try:
        write(str(path))
        os.chmod(path, 0o666 & ~umask())
        sync(path)
    except Exception as e:
        raise WriteError(path, e) from None
