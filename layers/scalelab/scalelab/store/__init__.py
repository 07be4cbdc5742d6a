"""The run table: key schema, item models, conversion and conditional writes (``table``, ``items``),
and the modules that own its items: run records, ledgers and locks (``runs``), the scale-out
meeting point (``scaleout``), and Powertools' idempotency records (``idempotency``).

Imports scalelab.core and scalelab.contracts.
"""
