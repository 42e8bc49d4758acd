"""Latency harness and (later) benchmark reports."""
