"""Reading a user's data file into named columns: .csv, .tsv, .jsonl, .parquet (and text, one text per line).

Real files are messy, and a reader that guesses silently loses or merges rows. The rules here, per format:
  .csv      RFC 4180 (Python's csv module, strict): a header row names the columns; a field holding a comma,
            a double quote or a newline is itself in double quotes, a quote inside it doubled ("").
  .tsv      no quoting at all, as GLUE's and most published TSV files are written: a tab separates fields,
            a newline ends the row, and a double quote is an ordinary character. (A CSV-style reader would
            take an unbalanced quote in a sentence as the start of a quoted field and merge the rows up to
            the next quote into one, silently.) A header row names the columns.
  .jsonl    one JSON object per line; the first object's keys are the columns.
  .parquet  the columns of the table.
  .txt      one text per line (a document or paragraph; masked LM): the single column "text". WikiText's own
            files, .raw and .tokens, are read the same way. A .txt file read as a table (train.py does
            so when columns are named or the task has labels; MRPC ships as tab-separated .txt) is a TSV
            if its first line holds a tab, else a CSV if it holds a comma.
Every text format is UTF-8: a byte-order mark is dropped, CRLF line ends are read as LF, and invalid UTF-8
is an error giving its byte offset. Blank lines are not rows. A row whose number of fields differs from
the header is an error naming its line, so the number of rows read is the number of rows in the file.
Each row remembers where it came from (`Table.where(i)`: "line 7", or "row 7" of a parquet file), so
that later checks (a label, an empty text) can name it too.
"""

import csv
import difflib
import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from data.files import DataError

TEXT_FORMATS = (".txt", ".raw", ".tokens")  # one text per line; .raw and .tokens: WikiText's file names
FORMATS = (".csv", ".tsv", ".jsonl", ".parquet", *TEXT_FORMATS)


@dataclass
class Table:
    path: Path  # the file read
    columns: dict[str, list]  # column name -> one value per row, in the file's order
    lines: list[int] | None  # per row, the line it starts on (1-based; the header is line 1); None for parquet

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))

    def where(self, i: int) -> str:
        """Where row i is, as a person looks for it: "line 7" in a text file, "row 7" (1-based) in parquet."""
        return f"line {self.lines[i]}" if self.lines is not None else f"row {i + 1}"

    def column(self, name: str, flag: str) -> list:
        """The values of column `name`; a missing one is an error listing the columns found (and the closest)."""
        if name not in self.columns:
            close = difflib.get_close_matches(name, list(self.columns), n=1)
            hint = f" (the closest: {close[0]!r})" if close else ""
            raise DataError(f"{self.path}: no column {name!r}; the columns are {', '.join(self.columns)}{hint}. "
                            f"Name the right one with {flag}")  # fmt: skip
        return self.columns[name]


def read_table(path, txt_is_table: bool = False) -> Table:
    """Read a .csv, .tsv, .jsonl, .parquet or text file (see the module doc for the rules of each).
    txt_is_table: a .txt file is a table (a header line, then rows) rather than one text per line."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise DataError(f"{path}: unknown format {suffix or '(no extension)'!r}; use one of {', '.join(FORMATS)}")
    if not path.is_file():
        raise DataError(f"{path}: {'a directory, not a file' if path.exists() else 'no such file'}")
    if suffix == ".parquet":
        return read_parquet(path)
    text = read_utf8(path)
    if suffix == ".txt" and txt_is_table:
        suffix = delimiter_of(path, text)
    if suffix in TEXT_FORMATS:
        rows = [(number, line) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
        if not rows:
            raise DataError(f"{path}: the file is empty (no line of text)")
        return Table(path, {"text": [line for _, line in rows]}, [number for number, _ in rows])
    rows = read_jsonl(path, text) if suffix == ".jsonl" else read_delimited(path, text, suffix)
    return table_of(path, rows, "tab" if suffix == ".tsv" else "comma")


def delimiter_of(path: Path, text: str) -> str:
    """ ".tsv" or ".csv": how a .txt table is read, from its first line (a tab, else a comma)."""
    header = next((line for line in text.split("\n") if line.strip()), "")
    if "\t" in header:
        return ".tsv"
    if "," in header:
        return ".csv"
    raise DataError(f"{path}: read as a table (its columns are named, or the task has labels), but its first line "
                    f"({header[:60]!r}) has no tab or comma; a table's first line names its columns, e.g. "
                    "sentence<TAB>label. For masked LM on plain text, leave out the column flags")  # fmt: skip


def read_utf8(path: Path) -> str:
    """The file's text: UTF-8, byte-order mark dropped, CRLF (and a lone CR) read as LF."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")  # -sig: drops a leading byte-order mark
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(f"{path}: not valid UTF-8 at byte {e.start} (line {line}): {raw[e.start:e.start + 4]!r}; "
                        "save the file as UTF-8") from None  # fmt: skip
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_delimited(path: Path, text: str, suffix: str) -> list[tuple[int, list[str]]]:
    """(line, fields) per row, the header first. CSV: RFC 4180 quoting; TSV: none (see the module doc)."""
    if suffix == ".tsv":
        return [(number, line.split("\t")) for number, line in enumerate(text.split("\n"), start=1) if line.strip()]
    physical = [line + "\n" for line in text.split("\n")]  # one element per line: reader.line_num counts lines
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))  # a long review is a field, not a quoting error
    reader = csv.reader(physical, strict=True)
    rows, start = [], 1
    try:
        for fields in reader:
            if fields and any(field.strip() for field in fields):
                rows.append((start, fields))
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}: line {start}: {e} (in a CSV file a field with a quote must be quoted "
                        'whole, and a quote inside it doubled: "say ""hi""")') from None  # fmt: skip
    return rows


def read_jsonl(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {number} is not valid JSON ({e.msg}, column {e.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, not an object "
                            '({"text": ..., "label": ...})')  # fmt: skip
        rows.append((number, row))
    return rows


def table_of(path: Path, rows: list, kind: str) -> Table:
    """Columns from (line, fields) rows: a header row then data (CSV/TSV: kind "comma" or "tab"), or one dict per
    row (JSON Lines)."""
    if not rows:
        raise DataError(f"{path}: the file is empty")
    if isinstance(rows[0][1], dict):  # JSON Lines: every row must have the first row's keys
        names = list(rows[0][1])
        for number, row in rows:
            missing = [name for name in names if name not in row]
            if missing:
                raise DataError(f"{path}: line {number} has no {missing[0]!r} (the first line has {', '.join(names)})")
        return Table(path, {name: [row[name] for _, row in rows] for name in names}, [n for n, _ in rows])
    (header_line, header), data = rows[0], rows[1:]
    names = [name.strip() for name in header]
    check_header(path, names)
    for number, fields in data:
        if len(fields) != len(names):
            fix = "a TSV field cannot hold a tab" if kind == "tab" else 'quote a field that holds a comma: "a, b"'
            raise DataError(f"{path}: line {number} has {len(fields)} {kind}-separated fields, the header (line "
                            f"{header_line}) has {len(names)} ({', '.join(names)}); {fix}")  # fmt: skip
    columns = {name: [fields[j] for _, fields in data] for j, name in enumerate(names)}
    if not data:
        raise DataError(f"{path}: a header ({', '.join(names)}) and no rows")
    return Table(path, columns, [number for number, _ in data])


def check_header(path: Path, names: list[str]) -> None:
    """A header names every column, once, and no name is a number: else the first row is data, not a header.
    A name that appears twice is said as such: the first row is a header, with a mistake in it."""

    def is_number(name):
        try:
            float(name)
            return True
        except ValueError:
            return False

    twice = next((name for name in names if name and names.count(name) > 1), None)
    if twice is not None and not any(is_number(name) for name in names):
        raise DataError(f"{path}: the header names column {twice!r} {names.count(twice)} times "
                        f"({', '.join(names)}); give every column its own name")  # fmt: skip
    bad = [name for name in names if not name or is_number(name)] or [n for n in names if names.count(n) > 1]
    if bad:
        shown = ", ".join(repr(name) for name in names)
        raise DataError(f"{path}: the first line ({shown}) is not a header row (it has {bad[0]!r}); the file "
                        "needs a first line naming its columns, e.g. sentence,label: add one")  # fmt: skip


def read_parquet(path: Path) -> Table:
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:  # pyarrow's errors subclass these
        first_line = str(e).splitlines()[0] if str(e) else ""
        raise DataError(f"{path}: cannot be read as parquet ({type(e).__name__}: {first_line})") from None
    if table.num_rows == 0:
        raise DataError(f"{path}: the file is empty (no rows)")
    return Table(path, {name: table.column(name).to_pylist() for name in table.column_names}, None)
