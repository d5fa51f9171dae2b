"""divergence losses (being written)."""
