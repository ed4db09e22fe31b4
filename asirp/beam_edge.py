"""beam_edge (being written for issue 18)."""
