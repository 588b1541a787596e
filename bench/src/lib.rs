//! Criterion benchmarks of the engine's hot paths, in `benches/hot_paths.rs`:
//! `cargo bench -p loyalty-bench`. Results are reported in the closing notes and, with the load
//! tests, in `bench/RESULTS.md` (issue 3).
