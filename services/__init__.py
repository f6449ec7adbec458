"""The system under test: catalog, customer and order, three small Quart services.

Each runs as ``python3 -m services.<name>`` and is reached through Apache at
``/<name>/``. They share ``services.kit`` and never import the harness.
"""
