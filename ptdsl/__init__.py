"""ptdsl: a compiler for LLM post-training methods.

The stable API (keep these names; code outside this repository calls them):
`load`, `compile`, `equivalent`, `SpecError`, `Method`, `CompiledMethod`, `InputError`.
Importing ptdsl does not import torch (nor hypothesis: `equivalent` loads it on use).
"""
from ptdsl.api import CompiledMethod, Input, InputError, Method, Param, compile, load
from ptdsl.diagnostics import Diagnostic, SpecError
from ptdsl.equivalence import equivalent

__all__ = ["load", "compile", "equivalent", "SpecError", "Diagnostic", "Method", "CompiledMethod", "Input", "Param",
           "InputError"]
__version__ = "0.1.0"
