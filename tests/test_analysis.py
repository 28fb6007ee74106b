"""analysis/ and analyze.py: each quantity against a case whose answer is known, and analyze.py end to end on
tiny runs of every method, bad input one line."""

import json
import math

import pytest
import torch

import analyze
import train
from analysis.amplification import amplification, top_directions
from analysis.gates import gate_grid
from analysis.magnitude import magnitude_direction, slope_and_correlation
from analysis.quant_error import CODES, FP4_CODE, relative_error
from analysis.spectrum import spectrum_stats
from analysis.subspace import subspace_similarity
from quant.nf4 import quantize_nf4
from tests.test_train import fails_cleanly, train_args
from training import learned


def orthonormal(n: int, k: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(n, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)).Q


def test_subspace_similarity_is_one_for_one_span_and_zero_for_orthogonal_ones():
    basis = orthonormal(64, 16, 0)  # (64, 16)
    a = torch.diag(torch.arange(8, 0, -1.0, dtype=torch.float64)) @ basis[:, :8].T  # (8, 64), rows span 8 dims
    same_span = torch.randn(8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) @ a
    phi = subspace_similarity(a, same_span)
    assert phi.shape == (8, 8) and phi[7, 7].item() == pytest.approx(1.0)  # the whole spans coincide
    assert subspace_similarity(a, basis[:, 8:].T)[7, 7].item() == pytest.approx(0.0, abs=1e-12)  # orthogonal
    wider = torch.cat([a, basis[:, 8:].T])  # (16, 64): contains a's span
    assert subspace_similarity(a, wider)[7, 15].item() == pytest.approx(1.0)  # / min(i, j) = 8
    assert subspace_similarity(a, a)[0, 0].item() == pytest.approx(1.0)  # the same top direction
    big = subspace_similarity(orthonormal(512, 8, 2).T, orthonormal(512, 8, 3).T)
    assert big[7, 7].item() == pytest.approx(8 / 512, rel=0.5)  # random subspaces: about max(i, j) / n


def test_amplification_on_a_constructed_weight():
    """W = 10 u1 v1^T + 1 u2 v2^T + 0.1 u3 v3^T; ΔW = 5 u2 v2^T amplifies W's second direction by 5."""
    u, v = orthonormal(32, 3, 4), orthonormal(24, 3, 5)
    w = 10 * torch.outer(u[:, 0], v[:, 0]) + torch.outer(u[:, 1], v[:, 1]) + 0.1 * torch.outer(u[:, 2], v[:, 2])
    delta = 5 * torch.outer(u[:, 1], v[:, 1])
    out = amplification(w, delta, r=1)
    assert out["delta_directions"] == pytest.approx(1.0)  # ||u2^T W v2|| = the weight W gives it
    assert out["w_directions"] == pytest.approx(10.0)  # W's own top direction
    assert out["delta_norm"] == pytest.approx(5.0) and out["factor"] == pytest.approx(5.0)
    assert out["random_directions"] < 1.0
    uu, vv = top_directions(w, 2)
    assert uu.shape == (32, 2) and vv.shape == (24, 2)


def test_magnitude_and_direction_of_a_scaling_and_a_rotation():
    w0 = torch.randn(6, 10, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    norms = w0.norm(dim=1)
    assert magnitude_direction(w0, 2 * w0) == pytest.approx((norms.mean().item(), 0.0), abs=1e-12)  # only magnitude
    theta = 0.3  # rotate every row by theta in the plane of its first two coordinates... of an orthonormal frame
    q = orthonormal(10, 10, 7)
    rotation = torch.eye(10, dtype=torch.float64)
    rotation[:2, :2] = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
                                    dtype=torch.float64)  # fmt: skip
    rows = torch.stack([q[:, 0] * n for n in norms])  # every row along q0, with its own norm
    turned = rows @ (q @ rotation @ q.T).T  # each row turned by theta, its norm kept
    d_m, d_d = magnitude_direction(rows, turned)
    assert d_m == pytest.approx(0.0, abs=1e-12) and d_d == pytest.approx(1 - math.cos(theta))
    assert slope_and_correlation([(0, 1), (1, 0), (2, -1)]) == pytest.approx((-1.0, -1.0))


def test_the_three_ranks_of_a_known_spectrum():
    delta = torch.zeros(5, 4)
    delta[0, 0], delta[1, 1] = 3.0, 1.0
    stats = spectrum_stats(delta)
    assert stats["rank"] == 2 and stats["stable_rank"] == pytest.approx(10 / 9)
    assert stats["effective_rank"] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert spectrum_stats(torch.eye(4))["effective_rank"] == pytest.approx(4.0)
    assert spectrum_stats(torch.zeros(3, 3))["rank"] == 0


def test_nf4_error_is_quant_nf4s_own_round_trip_and_fp4_is_bitsandbytes():
    w = torch.randn(48, 64, generator=torch.Generator().manual_seed(8)) * 0.05
    theirs = quantize_nf4(w, blocksize=64, double_quant=False).dequantize().view(w.shape)
    assert relative_error(w, CODES["NF4"]) == pytest.approx(float(((w - theirs) ** 2).sum() / (w**2).sum()))
    bnb = pytest.importorskip("bitsandbytes.functional")
    assert torch.equal(FP4_CODE, bnb.get_4bit_type("fp4", device="cpu").unique())
    assert relative_error(w, CODES["NF4"]) < relative_error(w, CODES["Int4"]) < relative_error(w, CODES["FP4"])


def test_gate_grid_from_metrics():
    rows = [{"module": f"layers.{i}.attention.{k}", "rank": i + (k == "value"), "r": 8}
            for i in range(2) for k in ("query", "value")]  # fmt: skip
    assert gate_grid({"sparse_lora_gates": rows}) == ([0, 1], ["query", "value"], [[0, 1], [1, 2]])
    assert gate_grid({}) == ([], [], [])


@pytest.fixture(scope="module")
def tiny_runs(tiny_model_dir, corpus, tmp_path_factory):
    """Four steps of every method that changes the encoder, checkpoints at steps 2 and 4."""
    root = tmp_path_factory.mktemp("analysis-runs")
    runs = {}
    for method in ("lora", "sparse_lora", "hira", "dora", "qlora", "full"):
        out = root / method
        args = [
            "--method",
            method,
            "--max-steps",
            "4",
            "--eval-every",
            "0",
            "--save-every",
            "2",
            "--keep-checkpoints",
            "4",
        ]
        if method == "sparse_lora":
            first_rule = "ours-judge_late-settle+judge_after_fall"  # judges every step after the fall: gates cut in 4
            args += ["--sora-rule", first_rule, "--sparse-lambda", "1e-1"]
        assert train.main(train_args(tiny_model_dir, corpus, out, *args)) == 0
        runs[method] = out
    return runs


def test_analyze_every_method_end_to_end(tiny_runs, tmp_path):
    out = tmp_path / "report"
    assert analyze.main([*map(str, tiny_runs.values()), "--output-dir", str(out)]) == 0
    report = (out / "analysis.md").read_text()
    for section in ("The spectrum of ΔW", "Subspace similarity", "ΔW against W", "Magnitude and direction",
                    "Sparse LoRA's gates", "4-bit quantisation error"):  # fmt: skip
        assert f"## {section}" in report
    for figure in ("spectrum", "subspace", "magnitude", "gates", "quant_error"):
        assert (out / f"{figure}.png").stat().st_size > 1000
    spectrum = report.split("## The spectrum of ΔW")[1].split("## ")[0]
    rows = {line.split("|")[1].split()[0]: line.split("|") for line in spectrum.splitlines() if " seed 0 (" in line}

    def max_rank(method):
        return int(rows[method][3].split(",")[1])

    assert max_rank("lora") == max_rank("qlora") == 8  # LoRA's ΔW = s B A has rank r at most (here exactly)
    assert max_rank("hira") > 8 and max_rank("full") > 8  # W0 ⊙ BA and full fine-tuning are not limited to r


def section_rows(report: str, title: str) -> list[list[str]]:
    """The table rows of one section of analysis.md, each split into its cells."""
    text = report.split(f"## {title}")[1].split("\n## ")[0]
    return [[cell.strip() for cell in line.split("|")[1:-1]] for line in text.splitlines() if " seed " in line]


def test_subspace_separates_depth_from_module_type_beside_the_one_direction_random_level(tiny_runs, tmp_path):
    """Per pair: the query and the value of the first and of the last layer, and φ(1, 1)'s random level 1/d
    (not max(i, j)/d of the top directions)."""
    out = tmp_path / "report"
    assert analyze.main([str(tiny_runs["lora"]), str(tiny_runs["dora"]), "--output-dir", str(out)]) == 0
    rows = section_rows((out / "analysis.md").read_text(), "Subspace similarity")
    layers = learned.load(tiny_runs["lora"]).layers
    last = max(int(name.split(".")[1]) for name in layers if name.startswith("layers."))
    assert [row[1] for row in rows] == [name for name in layers if name.startswith(("layers.0.", f"layers.{last}."))]
    assert {"layers.0.attention.query", "layers.0.attention.value", f"layers.{last}.attention.query"} <= {
        row[1] for row in rows
    }  # one layer's query and value: module type; one module in two layers: depth
    r = json.loads((tiny_runs["lora"] / "metrics.json").read_text())["hyperparameters"]["r"]
    for row in rows:
        d = layers[row[1]].a.shape[1]  # the dimension A's rows live in
        assert (row[3], row[6]) == (f"{1 / d:.4f}", f"{r / d:.3f}")


def test_magnitude_reports_the_query_only_fit_beside_the_papers(tiny_runs, tmp_path):
    """The DoRA paper's Fig. 2 fits query matrices: the table gives that fit, and the paper's own figure."""
    out = tmp_path / "report"
    assert analyze.main([str(tiny_runs["lora"]), str(tiny_runs["dora"]), "--output-dir", str(out)]) == 0
    rows = {
        row[0].split()[0]: row for row in section_rows((out / "analysis.md").read_text(), "Magnitude and direction")
    }
    assert rows["lora"][5] == "+0.83" and rows["dora"][5] == "-0.31"
    points = [magnitude_direction(learned.load(tiny_runs["dora"]).layers[name].w0, w)
              for _, weights in learned.along_the_run(tiny_runs["dora"]) for name, w in weights.items()
              if name.endswith(".query")]  # fmt: skip
    slope, corr = slope_and_correlation(points)
    assert rows["dora"][4] == f"{slope:.3g}, {corr:+.2f}"


def test_bad_input_is_one_line(tiny_runs, tiny_rich_model_dir, corpus, tmp_path, capsys):
    fails_cleanly(capsys, analyze.main, [str(tmp_path / "nothing")], "no such run directory")
    odd = tmp_path / "odd"
    odd.mkdir()
    metrics = json.loads((tiny_runs["lora"] / "metrics.json").read_text())
    (odd / "metrics.json").write_text(json.dumps({**metrics, "method": "adalora"}))
    fails_cleanly(capsys, analyze.main, [str(odd)], "method 'adalora' is not one of")
    (odd / "metrics.json").write_text(json.dumps({**metrics, "method": "head"}))
    fails_cleanly(capsys, analyze.main, [str(odd)], "a head-only run changes no weight of the encoder")
    elsewhere = tmp_path / "elsewhere"
    assert train.main(train_args(tiny_rich_model_dir, corpus, elsewhere, "--method", "lora", "--max-steps", "1",
                                 "--eval-every", "0")) == 0  # fmt: skip
    fails_cleanly(capsys, analyze.main, [str(tiny_runs["lora"]), str(elsewhere), "--output-dir", str(tmp_path / "o")],
                  "the runs are on different base models")  # fmt: skip
    assert not (tmp_path / "o").exists()


def test_the_initial_a_is_rebuilt_exactly(tiny_model_dir, corpus, tmp_path):
    """A run at a learning rate too small to move A still has its initial A: the rebuild must equal it."""
    for method in ("lora", "dora"):
        out = tmp_path / method
        flags = ["--method", method, "--max-steps", "1", "--lr", "1e-12", "--eval-every", "0", "--seed", "3"]
        assert train.main(train_args(tiny_model_dir, corpus, out, *flags)) == 0
        run = learned.load(out)
        initial = learned.initial_a(run)
        assert set(initial) == set(run.layers)
        assert all(torch.equal(run.layers[name].a, a) for name, a in initial.items())
