"""One module per step of the workflow: the logic each handler calls.

Imports scalelab.core, scalelab.contracts, scalelab.store and scalelab.resources.
"""
