"""poolnas."""
