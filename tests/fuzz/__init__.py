"""Fuzzing of the whole pipeline (trace -> properties -> mutate -> codegen) under hypothesis."""
