"""Running compiled methods inside other training libraries.

`ptdsl.integrations.trl`: TRL 1.16's DPOTrainer and GRPOTrainer with a spec's loss. Nothing
here is imported by `import ptdsl`; each integration imports its library itself.
"""
