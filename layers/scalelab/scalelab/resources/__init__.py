"""What scalelab knows of each kind of resource a run creates (``kinds``), and how to find them
all by their run tag (``discovery``).

Imports scalelab.core and scalelab.contracts.
"""
