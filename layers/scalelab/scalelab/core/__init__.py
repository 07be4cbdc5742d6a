"""Shared basics: clients, clock, errors, names and tags, settings, observability.

Imports nothing else of scalelab.
"""
