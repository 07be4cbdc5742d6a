"""scalelab: the shared layer of the scalelab SAM application.

Handlers in ``functions/`` are thin adapters; the logic they call lives here.
"""
