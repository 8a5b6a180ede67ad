"""Specs: one format for models (classifier, diffusion backend) and methods in Python, YAML and on the command line,
and the one builder that turns a method spec into a detector (:func:`diffguard.specs.method_specs.build_method`)."""
