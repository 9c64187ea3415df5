"""One run of the experiment, end to end, and what a sweep's job needs around it.

``experiment.run_experiment`` composes the stages in order (it reads like the pipeline
table in docs/index.md); ``job`` validates, resolves and fingerprints a config once; ``reuse`` keeps and reuses
trained weights; ``jobs`` names, skips and ends a sweep's jobs; ``summary`` is what a run prints.
"""
