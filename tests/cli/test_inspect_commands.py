"""The inspect and prove commands: `graph`, `diff`, `equiv` (exit codes, output) and
no torch import for the model-free ones."""
import subprocess
import sys
from pathlib import Path

import pytest

from ptdsl.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def test_graph_and_diff_do_not_import_torch():
    code = ("import sys; from ptdsl.cli.main import main; "
            "[main(a) for a in (['graph', 'grpo', '--format', 'mermaid'], ['graph', 'kto', '--format', 'dot'], "
            "['diff', 'grpo', 'dapo'], ['diff', 'dpo', 'cdpo', '--format', 'json'])]; "
            "sys.exit(3 if 'torch' in sys.modules else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_graph_and_diff_commands(capsys, tmp_path):
    assert main(["graph", "dpo", "--format", "text", "--no-metrics"]) == 0
    out = capsys.readouterr().out
    assert "dpo — optimised loss graph" in out and "metric" not in out
    assert main(["graph", "dpo", "--unoptimised", "--format", "mermaid", "-o", str(tmp_path / "g.mmd")]) == 0
    assert (tmp_path / "g.mmd").read_text().startswith("flowchart TB")
    assert main(["diff", "dpo", "cdpo"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("--- dpo\n+++ cdpo") and "+ dpo.ptdsl:18:52  0.1 * logsigmoid(-z)" in out
    assert main(["diff", "cdpo", "dpo", "--set-a", "label_smoothing=0"]) == 0
    assert "cdpo(label_smoothing=0)" in capsys.readouterr().out
    assert main(["graph", "nosuchmethod"]) == 1


def test_cli_exit_status_and_output(capsys):
    assert main(["equiv", "cdpo", "dpo", "--set-a", "label_smoothing=0", "--examples", "30"]) == 0
    assert "30 examples passed" in capsys.readouterr().out
    assert main(["equiv", "dpo", "ipo", "--examples", "30", "--seed", "3"]) == 1
    out = capsys.readouterr().out
    assert "NOT equivalent: dpo  ≢  ipo" in out and "loss  ipo = " in out
    assert main(["equiv", "luspo", "dr_grpo", "--set-b", "scale_rewards=true", "--set-b", "max_completion_length=4",
                 "--scale-b", "4", "--mode", "gradient", "--assume", "on_policy", "--examples", "30"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["equiv", "dpo", "ipo", "--assume", "nonsense"])
    assert exc.value.code == 2


def test_compile_emit_ir_prints_the_optimised_graph(capsys):
    """One equation per node with its type and spec location, the loss and metrics by node; the
    optimiser's work shows: dpo's label_smoothing (0) term is folded away."""
    import re
    import ptdsl
    assert main(["compile", "dpo", "--emit", "ir"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    eqs = [ln for ln in lines if ln.startswith("%")]
    assert all(re.match(r"%\d+ : (f32|bool)\[[^]]*\] += \S+.*# dpo\.ptdsl:\d+:\d+", ln) for ln in eqs), eqs
    assert len(eqs) == ptdsl.compile("dpo").graph.number_of_nodes()
    defined = {ln.split()[0] for ln in eqs}
    (loss,) = [ln for ln in lines if ln.startswith("loss = ")]
    assert loss.split(" = ")[1] in defined and " = mean " in next(ln for ln in eqs if ln.startswith(loss[7:] + " "))
    assert {ln.split(" = ")[0] for ln in lines if ln.startswith("metric ")} == {
        "metric reward_accuracy", "metric reward_margin", "metric chosen_reward", "metric rejected_reward"}
    assert "label_smoothing" not in "\n".join(lines)


def test_show_unoptimised_shows_the_graph_before_folding(capsys):
    """grpo's β = 0 folds its KL term, and with it the reference model, out of the optimised IR;
    --unoptimised shows the checked graph that still has them."""
    def ir(*args):
        assert main(["show", "grpo", *args]) == 0
        out = capsys.readouterr().out
        return out[out.index("\nir"):]
    optimised, before = ir(), ir("--unoptimised")
    assert before.startswith("\nir (checked, before optimisation)")
    assert "logprobs(reference, y)" in before and "logprobs(reference, y)" not in optimised
    assert len(before.splitlines()) > len(optimised.splitlines())


def test_equiv_renames_scales_and_tolerances(capsys):
    """--rename-b feeds SFT's completion from ORPO's chosen (ORPO at β = 0 is SFT on chosen);
    --scale-a/--scale-b multiply a side's loss; --rtol/--atol decide how near is equal."""
    base = ["--examples", "20"]
    assert main(["equiv", "orpo", "sft", "--set-a", "beta=0", *base]) == 1  # the sets do not match
    capsys.readouterr()
    assert main(["equiv", "orpo", "sft", "--set-a", "beta=0", "--rename-b", "completion=chosen", *base]) == 0
    assert "20 examples passed" in capsys.readouterr().out
    assert main(["equiv", "dpo", "dpo", "--scale-a", "2", *base]) == 1
    assert main(["equiv", "dpo", "dpo", "--scale-a", "2", "--scale-b", "2", *base]) == 0
    near = ["equiv", "dpo", "dpo", "--scale-a", "1.001", *base]
    assert main(near) == 1                                    # default rtol 1e-6
    assert main([*near, "--rtol", "2e-3"]) == 0               # 0.1 % is within 0.2 %
    assert main([*near, "--rtol", "0", "--atol", "1e-12"]) == 1
    assert main([*near, "--rtol", "0", "--atol", "1e3"]) == 0
    with pytest.raises(SystemExit) as exc:
        main(["equiv", "orpo", "sft", "--rename-b", "completion"])
    assert exc.value.code == 2


def test_cli_equiv_adapter(capsys):
    assert main(["equiv", "apo_zero", "apo_zero_unpaired", "--adapter", "paired-to-unpaired", "--scale-b", "2",
                 "--examples", "20"]) == 0
    out = capsys.readouterr().out
    assert "equivalent: apo_zero  ≡  2·apo_zero_unpaired" in out and "adapter: paired-to-unpaired" in out
    assert main(["equiv", "dpo", "ipo", "--adapter", "paired-to-unpaired", "--examples", "5"]) == 1
    assert "`dpo` reads `preference` data and `ipo` reads `preference` data" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["equiv", "dpo", "kto", "--adapter", "paired-to-unpaird"])
    assert exc.value.code == 2 and "did you mean `paired-to-unpaired`" in capsys.readouterr().err
