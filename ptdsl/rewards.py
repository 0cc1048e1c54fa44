"""`ptdsl.rewards.register("name")`: bind a verifier name used in specs to a Python
function with TRL's reward signature `fn(prompts, completions, **columns)`."""
from ptdsl.runtime.rewards import register

__all__ = ["register"]
