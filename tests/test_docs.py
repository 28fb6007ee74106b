"""The docs say what the code does: every command line in the README and docs/ parses with its script's own
argparse, every flag the docs name exists, every default the docs quote (the defaults table of
docs/training.md, the "(default X)" of each --help line) is the one the code uses, and every relative link
and #anchor resolves. Numbers measured by a benchmark cannot be checked this way: those tables are
written by their benchmark between markers, never by hand."""

import json
import re
import shlex
from pathlib import Path

import pytest

import analyze
import evaluate
import merge
import methods
import predict
import tasks
from tests.test_loading import ROOT
from training import cli

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SCRIPTS = {
    "train.py": cli,  # train.py reads its command line with training/cli.py
    "evaluate.py": evaluate,
    "predict.py": predict,
    "merge.py": merge,
    "analyze.py": analyze,
}


def fenced_lines(page: Path) -> list[str]:
    """The lines of the page's ``` blocks, a line continued with \\ joined to the next."""
    lines, inside, held = [], False, ""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            inside = not inside
            continue
        if inside:
            held += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
            if not line.rstrip().endswith("\\"):
                lines.append(held)
                held = ""
    return lines


def commands() -> list[tuple[str, str, list[str]]]:
    """(page, script, arguments) of every `python SCRIPT ...` or `torchrun ... SCRIPT ...` line in a block."""
    found = []
    for page in PAGES:
        for line in fenced_lines(page):
            words = shlex.split(line, comments=True)
            for i, word in enumerate(words):
                if word in SCRIPTS and i > 0 and (words[i - 1] == "python" or words[0] == "torchrun"):
                    end = next((j for j in range(i + 1, len(words)) if words[j] in ("|", "&&", ">", "<")), None)
                    found.append((page.name, word, words[i + 1 : end]))
                    break
    return found


@pytest.mark.parametrize("page, script, argv", commands(), ids=lambda x: x if isinstance(x, str) else None)
def test_every_command_in_the_docs_parses(page, script, argv):
    try:
        SCRIPTS[script].parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{page}: `{script} {' '.join(argv)}` does not parse (exit {e.code})")


def known_flags() -> set[str]:
    """Every flag of the four scripts and of the benchmarks (read off their add_argument calls)."""
    flags = set()
    for path in [
        *(ROOT / name for name in SCRIPTS),
        ROOT / "training" / "cli.py",
        *sorted((ROOT / "tests" / "benchmarks").glob("*.py")),
    ]:
        flags |= set(re.findall(r"""add_argument\(\s*["'](--[a-z0-9-]+)""", path.read_text(encoding="utf-8")))
    return flags


def test_every_flag_the_docs_name_exists():
    flags, unknown = known_flags(), []
    for page in PAGES:
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", page.read_text(encoding="utf-8")):
            if flag not in flags and flag not in ("--help", "--nproc", "--index-url"):
                unknown.append(f"{page.name}: {flag}")
    assert not unknown, unknown


def effective_default(name: str, method: str = "lora"):
    """What train.py uses when a flag is left out: argparse's default, a method flag's, or the method's lr."""
    if name == "lr":
        return cli.METHOD_LR.get(method, cli.DEFAULT_LR)
    if name == "max_seq_len":
        return tasks.get("wikitext2").default_max_seq_len  # every task's but IMDB's (512)
    if name == "warmup_steps":
        return cli.DEFAULT_WARMUP  # for a run longer than it (cli.fit_warmup)
    if name in cli.METHOD_FLAGS and cli.METHOD_FLAGS[name][0] is not None:  # None: the method fills it in
        return cli.METHOD_FLAGS[name][0]
    args = cli.parse_args(["--method", method])
    cli.method_flags(args, say=print)  # as train.py fills them in
    return args.__dict__[name]


def defaults_table() -> list[tuple[str, str, str]]:
    """(flag, method or '', value) of the rows of docs/training.md's defaults table: | `--flag` (method) | value |."""
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    table = text.split("<!-- defaults:start -->")[1].split("<!-- defaults:end -->")[0]
    return re.findall(r"^\| `(--[a-z-]+)`(?: \(([a-z_]+)\))? \| `([^`]+)` \|", table, flags=re.M)


def test_the_defaults_table_is_the_codes():
    rows = defaults_table()
    assert len(rows) >= 15
    for flag, method, value in rows:
        name = flag[2:].replace("-", "_")
        actual = effective_default(name, method or "lora")
        assert str(actual) == value or (isinstance(actual, float) and float(value) == actual), (flag, method, value)
    for method in methods.METHODS:  # every method's learning rate is in the table
        assert any(flag == "--lr" and (m == method or (not m and method not in cli.METHOD_LR))
                   for flag, m, _ in rows), method  # fmt: skip


def test_every_help_default_is_the_codes():
    """A flag whose help says "(default X)" uses X."""
    parser_help = {}
    for action in cli.build_parser()._actions:
        if action.help and action.option_strings:
            parser_help[action.dest] = action.help
    for name, text in parser_help.items():
        for said in re.findall(r"\(default ([0-9][0-9.e-]*)", text):
            assert float(said) == float(effective_default(name)), (name, said)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # http:, https:, mailto:
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), flags=re.M)
                if anchor not in {slug(h) for h in headings}:
                    broken.append(f"{page.name}: {target} (no such heading)")
    assert not broken, broken


def test_the_docs_speak_to_users():
    """No issue numbers, no talk of "the issue", no path of the machine the docs were written on."""
    machine_paths = ["/" + "work/", r"\.\./" + "shared"]  # spelled in two parts: this file reads neither
    banned = re.compile("|".join([r"\bissues? \d+", r"\b[Tt]he issue\b", *machine_paths]))
    found = [f"{page.name}: {hit}" for page in PAGES for hit in banned.findall(page.read_text(encoding="utf-8"))]
    assert not found, found


def test_the_readme_is_a_first_page():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 130


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split(f"\n## {title}\n")[1].split("\n## ")[0]


def test_the_readmes_glue_numbers_are_the_reports():
    """The README's table is the report's compact table of the stored cells, and every score the README's
    results and method advice quote (a decimal, not a count like 22.7M or a share like 0.3%) is a number of
    the report's tables."""
    from tests.benchmarks import glue_cells, glue_report

    cells, baseline = glue_cells.load(), json.loads(glue_cells.BASELINE.read_text())
    rows = glue_report.complete_rows(glue_report.table_cells(cells))
    table = glue_report.compact_table(rows, baseline)
    results = readme_section("Results")
    block = results.split("<!-- glue-converged:start -->\n")[1].split("<!-- glue-converged:end -->")[0]
    assert block.splitlines() == table
    tables = [table, glue_report.main_table(rows, glue_report.chosen_rates(cells), baseline),
              glue_report.against_full(rows), glue_report.against_chance(rows, baseline),
              *([glue_report.sparse_table(rows["sparse_lora"])] if "sparse_lora" in rows else [])]  # fmt: skip
    numbers = set(re.findall(r"(?<![\d.])\d+\.\d(?!\d)", "\n".join(line for t in tables for line in t)))
    prose = results.replace(block, "") + readme_section("Which method to pick")
    quoted = set(re.findall(r"(?<![\d.])\d+\.\d(?![\d×xMk%])", prose))
    assert quoted and quoted <= numbers, sorted(quoted - numbers)
