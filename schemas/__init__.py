"""Column names, types and validation: the single source every other package reads."""
