"""The rating engine: compiled rate tables, numba kernels, and thin Arrow wrappers (issue 3)."""
