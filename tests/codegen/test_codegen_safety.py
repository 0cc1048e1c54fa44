"""Generated loss source is code: user-derived text (paths, spec comments) never becomes
part of it, and nothing runs unless the module has exactly the shapes codegen emits."""
import ast
import math
import dataclasses

import pytest
import torch
from hypothesis import assume, given, settings, strategies as st

import ptdsl
from ptdsl.api import CompiledMethod
from ptdsl.codegen import kernels
from ptdsl.codegen.safety import UnsafeSource, check_source, comment_text, kernel_names
from ptdsl.library import methods_dir
from tests.helpers import compiled

SFT = (methods_dir() / "sft.ptdsl").read_text()
KERNELS = kernel_names(kernels)


def _spec(tmp_path, directory: str, text: str = SFT):
    d = tmp_path / directory
    d.mkdir(parents=True, exist_ok=True)
    f = d / "s2.ptdsl"
    f.write_text(text.replace("method sft", "method s2"), encoding="utf-8")
    return f


def _sft_inputs():
    torch.manual_seed(0)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    return {"logprobs(policy, completion)": -torch.rand(2, 3, dtype=torch.float64), "mask(completion)": mask}


def _shape(source: str) -> str:
    """The module's syntax tree: what runs, without comments."""
    return ast.dump(ast.parse(source))


BASELINE = _shape(ptdsl.compile("sft").source)


def test_a_path_with_newlines_and_code_stays_a_comment(tmp_path):
    """The reported exploit: a directory named `x\\nimport os; os.system(...)\\n#` ran the command
    when the loss was first called."""
    marker = tmp_path / "pwned"
    f = _spec(tmp_path, f'x\nimport os; os.system("touch {marker}")\n#')
    c = ptdsl.compile(str(f))
    loss, _ = c.loss(_sft_inputs())
    assert torch.isfinite(loss) and not marker.exists()
    assert _shape(c.source) == BASELINE
    assert "\\nimport os" in c.source.splitlines()[0]  # shown, escaped, in the header comment


def test_a_nul_byte_in_a_spec_comment_is_escaped(tmp_path):
    text = SFT.replace("loss -token_mean(logprobs(policy, completion))",
                       "loss -token_mean(logprobs(policy, completion)) #\x00\x0b\u2028import os")
    c = ptdsl.compile(str(_spec(tmp_path, "nul", text)))
    assert "\x00" not in c.source and "\\x00" in c.source and "\\u2028import os" in c.source
    assert _shape(c.source) == BASELINE
    assert torch.isfinite(c.loss(_sft_inputs())[0])


_PATH_CHARS = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))


@settings(max_examples=60)
@given(directory=st.text(_PATH_CHARS, min_size=1, max_size=40),
       comment=st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=("Cs",)), max_size=60),
       title=st.text(st.characters(blacklist_characters='"\n\r', blacklist_categories=("Cs",)), max_size=30),
       name=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True))
def test_user_text_never_changes_the_generated_code(tmp_path_factory, directory, comment, title, name):
    """Whatever the directory, method name, title and comments, the generated module has the
    same syntax tree as the library's sft, and passes the allowlist."""
    assume(directory not in (".", "..") and len(directory.encode("utf-8")) < 200)
    assume(name not in ("method", "extends", "paper", "family", "stable", "experimental", "data", "reward",
                        "rollout", "param", "let", "loss", "metric", "in", "and", "or", "not", "true", "false"))
    text = (SFT.replace('"Supervised fine-tuning (negative log-likelihood)"', f'"{title}"')
            .replace("method sft", f"method {name}")
            .replace("data sft", f"data sft  # {comment}")
            .replace("loss -token_mean(logprobs(policy, completion))",
                     f"loss -token_mean(logprobs(policy, completion))  # {comment}"))
    d = tmp_path_factory.mktemp("p") / directory
    d.mkdir(parents=True, exist_ok=True)
    f = d / f"{name}.ptdsl"
    f.write_text(text, encoding="utf-8")
    c = ptdsl.compile(str(f))
    check_source(c.source, KERNELS)
    assert _shape(c.source) == BASELINE
    assert len(c.source.splitlines()) == len(compiled("sft").source.splitlines())


@pytest.mark.parametrize("text", ["a\nb", "a\rb", "a\x00b", "a\u2028b", "a\x85b", "a\x0bb", "a\x1bb", "\U000e0001"])
def test_comment_text_is_one_printable_line(text):
    out = comment_text(text)
    assert out.isprintable() and len(out.splitlines()) == 1


def test_comment_text_keeps_printable_text():
    assert comment_text("dpo.ptdsl:14  loss mean(β * z)  # ok") == "dpo.ptdsl:14  loss mean(β * z)  # ok"


def test_every_library_method_passes_the_allowlist():
    for name in ptdsl.library.all_names():
        check_source(ptdsl.compile(name).source, KERNELS)


_HEADER = "def loss_fn(inputs, dt, norm, state):\n"
_OK = _HEADER + "    a_1 = inputs['x']\n    return a_1, {'m': a_1.detach()}\n"
_BAD = {
    "an import": _HEADER + "    import os\n    return 1, {}\n",
    "a second statement": _OK + "import os\n",
    "a call of a bare name": _HEADER + "    a_1 = __import__('os')\n    return a_1, {}\n",
    "a builtin": _HEADER + "    a_1 = open('f')\n    return a_1, {}\n",
    "a dunder attribute": _HEADER + "    a_1 = inputs.__class__\n    return a_1, {}\n",
    "a torch function not in the table": _HEADER + "    a_1 = torch.load('f')\n    return a_1, {}\n",
    "a module reached through kernels": _HEADER + "    a_1 = K.torch.load('f')\n    return a_1, {}\n",
    "a lambda": _HEADER + "    a_1 = (lambda: 1)\n    return a_1, {}\n",
    "a name that is no local": _HEADER + "    a_1 = os\n    return a_1, {}\n",
    "rebinding a module": _HEADER + "    torch = inputs\n    return torch, {}\n",
    "a keyword other than dtype": _HEADER + "    a_1 = torch.tensor(1.0, device=dt)\n    return a_1, {}\n",
    "another signature": "def loss_fn(inputs, dt, norm, state, extra=1):\n    return 1, {}\n",
    "a decorator": "@torch.no_grad()\n" + _OK,
    "another function name": _OK.replace("loss_fn", "other"),
    "a comprehension": _HEADER + "    a_1 = [x for x in inputs]\n    return a_1, {}\n",
    "an f-string": _HEADER + "    a_1 = f'{inputs}'\n    return a_1, {}\n",
    "a computed subscript": _HEADER + "    a_1 = inputs[dt]\n    return a_1, {}\n",
    "a power operator": _HEADER + "    a_1 = inputs['x'] ** 2\n    return a_1, {}\n",
    "a syntax error": _HEADER + "    a_1 = (\n",
}


def test_the_allowlist_accepts_the_emitted_shape():
    check_source(_OK, KERNELS)


@pytest.mark.parametrize("what", sorted(_BAD))
def test_the_allowlist_refuses(what):
    with pytest.raises(UnsafeSource):
        check_source(_BAD[what], KERNELS)


def test_a_compiled_method_refuses_to_run_unsafe_source(tmp_path):
    """Even if a bug put foreign code into `.source`, `.loss` refuses before anything executes."""
    marker = tmp_path / "ran"
    c = ptdsl.compile("sft")
    evil = c.source.replace("def loss_fn(inputs, dt, norm, state):\n",
                            f"def loss_fn(inputs, dt, norm, state):\n    x_0 = K.torch.save(1, {str(marker)!r})\n")
    forged = CompiledMethod(c.method, dataclasses.replace(c._c, source=evil))
    with pytest.raises(UnsafeSource):
        forged.loss(_sft_inputs())
    assert not marker.exists()


def test_non_finite_constants_run_and_agree_with_the_interpreter(tmp_path):
    """`log(0)` folds to -inf (IEEE); the generated code spells it with torch's name, not a bare `inf`."""
    spec = SFT.replace("loss -token_mean(logprobs(policy, completion))",
                       "loss -token_mean(logprobs(policy, completion)) + mean(max(length(completion), log(0)))")
    c = ptdsl.compile(str(_spec(tmp_path, "inf", spec)))
    assert "-torch.inf" in c.source
    x = _sft_inputs()
    assert c.loss(x)[0].item() == pytest.approx(c.interpret(x)[0].item())


@pytest.mark.parametrize("value,expected", [(float("inf"), "torch.inf"), (float("-inf"), "-torch.inf"),
                                             (float("nan"), "torch.nan"), (0.5, "0.5"), (True, "True")])
def test_constants_are_python_literals_or_torch_names(value, expected):
    from ptdsl.codegen.python import _const
    assert expected in _const(value)
    check_source(_HEADER + f"    a_1 = {_const(value)}\n    return a_1, {{}}\n", KERNELS)



def test_generated_code_runs_first_thing_in_a_fresh_process(tmp_path):
    """Generated code keeps Python's builtins in its globals: torch's C code imports through them,
    and with an empty `__builtins__` the first torch.tensor of a fresh process failed inside torch."""
    import subprocess
    import sys
    spec = tmp_path / "probe.ptdsl"
    spec.write_text('method probe "p"\ndata sft\npolicy\nlet x = logp(policy, completion)\n'
                    "loss -mean(x) + mean(x) * log(0)\n")
    code = ("import sys, torch, ptdsl\n"
            "c = ptdsl.compile(sys.argv[1])\n"
            "x = {'logprobs(policy, completion)': torch.zeros(1, 1, dtype=torch.float64),\n"
            "     'mask(completion)': torch.ones(1, 1, dtype=torch.bool)}\n"
            "print(float(c.loss(x)[0]))\n")
    out = subprocess.run([sys.executable, "-c", code, str(spec)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert math.isnan(float(out.stdout))  # 0 · (−∞): the IEEE answer, computed, not a crash
