"""The ground floor: settings, errors, external programs, vocabularies and small helpers.

Nothing here imports any other part of Kerani.
"""
