"""Benchmarks that print figures (speed, accuracy, human effort); run with `kerani bench ...`."""
