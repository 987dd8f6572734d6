"""How we search: data, supernet training, search orchestration, analysis and export."""

from .analysis import hypervolume, load_trials, load_verify, pareto_front

__all__ = ["hypervolume", "load_trials", "load_verify", "pareto_front"]
