"""replay (being written for issue 18)."""
