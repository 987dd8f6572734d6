"""How we search: data, supernet training, search orchestration, analysis and export."""
