//! Criterion benchmarks of the engine's hot paths live in `benches/` (see bench/README.md).
