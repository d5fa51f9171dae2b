"""combo losses (being written)."""
