"""Reference implementations of the graph contracts (numpy only)."""
