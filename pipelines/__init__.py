"""Input and output: the home directory, the catalog store, files, the lake and the CLI."""
