"""Every step's contract: the event it parses, the result it returns, and what they share.

Imports only scalelab.core.
"""
