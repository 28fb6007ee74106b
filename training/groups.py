"""Runs that differ only in --seed are one result: the mean over the seeds, the spread between them.

A single run's test score carries the noise of its seed (adapter initialisation, data order, dropout);
two methods whose single-seed scores differ by less than that noise are not told apart. evaluate.py
therefore groups the runs of a task whose settings are identical but for the seed, and reports per metric

    mean = (1/n) sum_i x_i          std = sqrt( sum_i (x_i - mean)^2 / (n - 1) )   (the sample standard
                                                                                    deviation; none for n = 1)
with n, the number of seeds. The standard error of the mean is std / sqrt(n).
"""

import math

IGNORED = ("seed", "output_dir", "resume")  # settings that do not make two runs different experiments
RESULTS = ("test_", "validation_")  # the prefixes of the measured results


def group_key(row: dict) -> str:
    """What a run is, apart from its seed: task, method, base model and every other hyper-parameter."""
    settings = {k: v for k, v in sorted(row.get("hyperparameters", {}).items()) if k not in IGNORED}
    return repr((row["task"], row["method"], row["base_model"], settings))


def mean_and_std(values: list[float]) -> tuple[float, float | None]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((x - mean) ** 2 for x in values) / (len(values) - 1))


def group_seeds(rows: list[dict]) -> list[dict]:
    """One row per group, in the order of each group's first run: every result (and any other number that
    differs between its runs) the mean over them, with `<key>_std` its sample standard deviation (n > 1);
    `n` the number of seeds, `seeds` which."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(group_key(row), []).append(row)
    grouped = []
    for members in groups.values():
        row = dict(members[0])
        numbers = [k for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        for key in numbers:
            values = [m[key] for m in members if isinstance(m.get(key), (int, float))]
            # a result always gets its spread (0 if the seeds agree); a setting or a count the same in every
            # run (the parameter count) is kept as it is
            if key.startswith(RESULTS) or len(set(values)) > 1:
                row[key], row[f"{key}_std"] = mean_and_std(values)
        row["n"] = len(members)
        row["seeds"] = [m.get("hyperparameters", {}).get("seed") for m in members]
        grouped.append(row)
    return grouped
