"""Backends: one Runner per inference engine (lazy imports), plus build steps per target."""
