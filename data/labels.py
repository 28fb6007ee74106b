"""Labels as a file gives them, turned into what a model learns: class ids, or scores for regression.

A label is either a number (1, 0.5, or the text "3.8" in a CSV file) or a name ("positive", "entailment");
one column holds one kind, never both (a mixture is nearly always a shifted column or a stray header row).

  kind of task   every label a number and at least one not an integer -> regression; otherwise
                 classification (integers 0/1/2 are class ids, as in GLUE's files). This is the rule that
                 `--task` left out applies; pass --task regression for integer scores such as 1-5 stars.
  classes        the distinct labels of the training file, **sorted** (numbers by value, names
                 alphabetically), as transformers' run_glue.py sorts them: class id i is the i-th. So the
                 same file gives the same ids on every run, and a label seen only in validation or test
                 is an error (the model has no output for it).
"""

import math

import numpy as np

from data.files import DataError
from data.tables import Table


def as_number(value) -> float | None:
    """The label as a number, or None if it is a name. Booleans are names: True is not a score."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def canonical(value) -> str:
    """The class name of a label: an integer as "3" (whether the file wrote 3, 3.0 or "3"), a name stripped."""
    number = as_number(value)
    if number is not None and number.is_integer():
        return str(int(number))
    return str(value).strip()


def present_labels(table: Table, column: str) -> list:
    """The column's labels; a row without one, or with a list or an object (JSON Lines) for one, is an error
    naming it: str() would make a class of "['pos']"."""
    values = table.column(column, "--label-column")
    for i, value in enumerate(values):
        if value is None or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{table.path}: {table.where(i)} has no label in column {column!r}; "
                            "give every row a label, or remove the row")  # fmt: skip
        if not isinstance(value, (str, int, float, bool)):
            raise DataError(f"{table.path}: {table.where(i)} has the label {value!r} in column {column!r}, a "
                            f"{type(value).__name__}; a label is one text, number or true/false")  # fmt: skip
    return values


def check_one_kind(table: Table, column: str, values: list) -> None:
    """All numbers or all names; else an error naming a row of each."""
    numbers = [i for i, v in enumerate(values) if as_number(v) is not None]
    names = [i for i, v in enumerate(values) if as_number(v) is None]
    if numbers and names:
        a, b = numbers[0], names[0]
        raise DataError(f"{table.path}: mixed label types in column {column!r}: {table.where(a)} has the number "
                        f"{values[a]!r}, {table.where(b)} the name {values[b]!r}; labels are all numbers or "
                        "all names")  # fmt: skip


def infer_kind(values: list) -> str:
    """ "regression" if every label is a number and one is not an integer; else "classification"."""
    numbers = [as_number(v) for v in values]
    if all(n is not None for n in numbers) and any(not n.is_integer() for n in numbers):
        return "regression"
    return "classification"


def class_names(values: list) -> tuple[str, ...]:
    """The sorted distinct labels: numbers by value, names alphabetically (see the module doc)."""
    names = {canonical(v) for v in values}
    if all(as_number(name) is not None for name in names):
        return tuple(sorted(names, key=float))
    return tuple(sorted(names))


def class_ids(table: Table, column: str, names: tuple[str, ...], values: list) -> np.ndarray:
    """(n,) int64 class ids; a label that the training file does not have is an error naming its row."""
    index = {name: i for i, name in enumerate(names)}
    ids = np.empty(len(values), dtype=np.int64)
    for i, value in enumerate(values):
        name = canonical(value)
        if name not in index:
            raise DataError(f"{table.path}: {table.where(i)} has label {name!r}, which the training file never "
                            f"has (its labels: {', '.join(names)}); the model has no output for it. Add "
                            "training examples of it, or remove the row")  # fmt: skip
        ids[i] = index[name]
    return ids


def scores(table: Table, column: str, values: list) -> np.ndarray:
    """(n,) float32 regression targets; a label that is not a number is an error naming its row."""
    out = np.empty(len(values), dtype=np.float32)
    for i, value in enumerate(values):
        number = as_number(value)
        if number is None:
            raise DataError(f"{table.path}: {table.where(i)} has label {value!r} in column {column!r}, not a "
                            "number; a regression label is a number (e.g. 3.8)")  # fmt: skip
        out[i] = number
    return out
