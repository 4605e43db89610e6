"""The evaluation harness: synthetic forms, ground-truth datasets, accuracy, simulated workers.

Truth is used here only to score and to stand in for staff; production code never imports it.
"""
