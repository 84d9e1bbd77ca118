"""fitq's benchmarks (see bench/README.md)."""
