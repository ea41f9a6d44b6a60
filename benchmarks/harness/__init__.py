"""What both benchmarks share: result tables, the machine's description and its load."""
