"""ptdsl: a compiler for LLM post-training methods.

The stable API (keep these names; code outside this repository calls them):
`load`, `compile`, `SpecError`, `Method`, `CompiledMethod`, `InputError`.
Importing ptdsl does not import torch.
"""
from ptdsl.api import CompiledMethod, Input, InputError, Method, Param, compile, load
from ptdsl.diagnostics import Diagnostic, SpecError

__all__ = ["load", "compile", "SpecError", "Diagnostic", "Method", "CompiledMethod", "Input", "Param",
           "InputError"]
__version__ = "0.1.0"
