"""measure/energy."""
