"""nexus (being written for issue 18)."""
