"""The composable switches of a meta-model (inner optimizer, sharing, ...)."""
