"""A small real task for the demo, the tests and the benchmarks: MNIST-1D, made locally."""
