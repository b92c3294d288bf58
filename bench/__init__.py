"""Benchmark harness for the gateway: python -m bench (see bench/README.md)."""
