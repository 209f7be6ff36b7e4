"""Meta-models: `MetaModel` and the methods built on it."""
