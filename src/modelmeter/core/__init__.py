"""Layer 0: plain data and helpers shared by every other layer (stdlib only)."""
