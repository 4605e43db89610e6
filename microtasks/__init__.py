"""Micro tasks: routing, the queue with leases, consensus, workers, simulated crowd."""
