"""benchmarks/dpo.py keeps what it measured when one configuration fails (a 30-minute timeout
once lost a 45-minute run), and leaves the small bf16 configuration out on CPUs without bf16
instructions, saying so."""
import importlib.util
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def dpo_module():
    spec = importlib.util.spec_from_file_location("bench_dpo_configs", BENCH / "dpo.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_config(size, precision, shape, names):
    """A measured configuration as measure_config returns it: every contender 10 ms (CPU 20 ms)."""
    one = {"median": 10.0, "min": 9.0, "max": 11.0, "q1": 9.5, "q3": 10.5, "n": 1,
           "cpu": {"median": 20.0, "min": 19.0, "max": 21.0, "q1": 19.5, "q3": 20.5, "n": 1}}
    return {"size": size, "precision": precision, "shape": shape, "steps": {n: dict(one) for n in names},
            "startup_s": {n: 1.0 for n in names}, "info": {},
            "memory": {n: {"peak_mb": 100.0, "before_models_mb": 50.0} for n in names}, "tokens_per_step": 1024}


def test_a_failing_configuration_is_recorded_and_the_others_are_kept(monkeypatch):
    mod = dpo_module()
    plan = {("tiny", "fp32", "even"): 1, ("small", "fp32", "even"): 1, ("small", "bf16", "even"): 1,
            ("small", "fp32", "long"): 1}
    monkeypatch.setattr(mod, "FULL", plan)
    monkeypatch.setattr(mod.C, "machine_info", lambda: {"isa": ["avx2"]})

    def measure(size, precision, shape, rounds, warmup, smoke):
        if size == "small" and shape == "even":
            raise RuntimeError("subprocess … failed (1):\nboom")
        return fake_config(size, precision, shape, mod.ONLY.get((size, precision, shape), mod.CONTENDERS))
    monkeypatch.setattr(mod, "measure_config", measure)
    data = mod.run(quick=False)
    assert set(data["configs"]) == {"tiny fp32", "small fp32 long-prompt"}
    assert set(data["failed"]) == {"small fp32"} and "boom" in data["failed"]["small fp32"]
    assert data["skipped"] == ["small bf16"]   # no avx512_bf16 / amx_bf16: never measured
    md = mod.markdown(data)
    assert "### small fp32: failed" in md and "boom" in md and "### small bf16" in md and "Left out" in md
    # the three-contender configuration prints its ratios, and "–" for those of contenders it did not time
    row = next(line for line in md.splitlines() if line.startswith("| small fp32 long-prompt |"))
    assert row.count("–") == 5 and "| 1.00 |" in row


def test_native_bf16_keeps_the_small_bf16_configuration(monkeypatch):
    mod = dpo_module()
    monkeypatch.setattr(mod, "FULL", {("small", "bf16", "even"): 1})
    monkeypatch.setattr(mod.C, "machine_info", lambda: {"isa": ["avx2", "avx512f", "avx512_bf16"]})
    monkeypatch.setattr(mod, "measure_config", lambda size, precision, shape, *a: fake_config(
        size, precision, shape, mod.CONTENDERS))
    data = mod.run(quick=False)
    assert set(data["configs"]) == {"small bf16"} and not data.get("skipped") and not data.get("failed")


def test_trls_bf16_policy_forward_runs_under_autocast():
    """transformers 5's Trainer leaves autocast to accelerate's prepared model: the benchmark's
    TRL step must use that model, or its "bf16" policy runs in fp32 (as it did until 2026-12-06)."""
    import torch
    mod = dpo_module()
    mod.C.setup_env(True)
    seen = []

    def hook(module, args, output):
        # a layer's hook runs inside the model's forward, which accelerate wraps in autocast (the
        # model's own hooks run outside it); training: the policy's layers, not the reference's
        if type(module).__name__ == "LlamaDecoderLayer" and module.training:
            seen.append(torch.is_autocast_enabled("cpu"))
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        step, _ = mod.make_trl("tiny", "bf16", mod.Examples("tiny", 1), False, 1)
        step(0)
    finally:
        handle.remove()
    assert seen and all(seen), seen
