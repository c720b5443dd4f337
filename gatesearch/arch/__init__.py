"""Architectures: the graph a derivation becomes (hash, Parquet I/O, descriptions), the model
built from it, and the search spaces and known architectures they come from."""
