"""The house rules of the teaching core: the files a learner reads (the config, the model and its heads, the
methods, NF4, the analyses) import nothing from the product layer around them, and train.py's loop names
no method. Read off the source with `ast`, so a rule that is broken fails here, whatever the tests run."""

import ast

import methods
from tests.test_loading import ROOT

CORE = [
    "minibert/config.py",
    "minibert/model.py",
    "minibert/classifier.py",
    *(f"methods/{name}.py" for name in ("base", "hooks", "lora", "sora", "hira", "dora", "qlora", "full", "inject")),
    "quant/nf4.py",
    "quant/linear4bit.py",
    *(str(path.relative_to(ROOT)) for path in sorted((ROOT / "analysis").glob("*.py"))),
]
# The product layer: the command line, resuming and data parallelism, your files, PEFT's adapter files.
PRODUCT = ("training", "train", "argparse", "torch.distributed", "data.user_files", "methods.peft_format")


def imported(path) -> set[str]:
    """Every module a file imports, by its full dotted name (`from a import b` gives a and a.b)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def source(module: str):
    """This repository's file for a dotted module name (a package: its __init__.py), or None."""
    path = ROOT.joinpath(*module.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def reached(path) -> dict[str, str]:
    """Every module `path` imports, directly or through this repository's modules: name -> the file that
    imports it."""
    found, todo, seen = {}, [path], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name in imported(current):
            found.setdefault(name, str(current.relative_to(ROOT)))
            if source(name) is not None:
                todo.append(source(name))
    return found


def is_product(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in PRODUCT)


def test_the_core_imports_nothing_from_the_product_layer():
    broken = []
    for file in CORE:
        for name, importer in reached(ROOT / file).items():
            if is_product(name):
                broken.append(f"{file} reaches {name} (imported by {importer})")
    assert not broken, "\n".join(broken)


def test_the_check_sees_a_product_import(tmp_path):
    """The rule can fail: a file that imports the command line, or reaches PEFT's files through a package."""
    (tmp_path / "a.py").write_text("import argparse\nfrom methods import lora\n")
    assert sorted(name for name in imported(tmp_path / "a.py") if is_product(name)) == ["argparse"]
    assert is_product("methods.peft_format") and not is_product("methods.lora") and not is_product("trainer")
    assert "methods.peft_format" in reached(ROOT / "methods" / "__init__.py")  # the package's façade does


def loop_source():
    tree = ast.parse((ROOT / "train.py").read_text(encoding="utf-8"))
    return next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "train")


def test_the_loop_names_no_method_and_fits_on_a_screen():
    loop = loop_source()
    words = {node.value for node in ast.walk(loop) if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    words |= {node.id for node in ast.walk(loop) if isinstance(node, ast.Name)}
    words |= {node.attr for node in ast.walk(loop) if isinstance(node, ast.Attribute)}
    named = sorted(word for word in words for method in methods.METHODS if method in word.lower().split("_"))
    assert not named, f"train.py's loop names a method: {named}"
    assert not any("sora" in word.lower() or "sparse" in word.lower() for word in words)
    assert loop.end_lineno - loop.lineno + 1 <= 60
    assert len((ROOT / "train.py").read_text(encoding="utf-8").splitlines()) <= 300
