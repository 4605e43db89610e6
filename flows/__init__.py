"""Prefect flows: thin tasks around library calls, passing ids and keys, never images."""
