"""provenance (being written for issue 18)."""
