"""mrface bench: the benchmark suites of a source checkout, their result files and the BENCHMARKS.md document."""
