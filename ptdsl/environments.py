"""Environments for episodes, as a user names them: `@ptdsl.environments.register("name")`
binds a factory in TRL's environment_factory convention to the name a spec's
`environment("name")` uses (the registry itself is runtime/environments.py)."""
from ptdsl.runtime.environments import (BUILTIN, Environment, known_names, parse_env_flags,  # noqa: F401
                                        register, resolve)
