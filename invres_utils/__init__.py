"""Utilities every layer uses, below ``search_spaces``: atomic file writes
(:mod:`invres_utils.atomic_files`) and the one-line-error command line parser
(:mod:`invres_utils.cli`). Nothing here imports the project's other packages."""
