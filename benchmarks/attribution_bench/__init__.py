"""The attribution benchmark's parts; ``benchmarks/attribution.py`` runs them."""
