"""One module per library: its adapter to the mask game and the settings it runs with.

Each module's ``methods()`` lists its :class:`~attribution_bench.game.Method` s; the library
itself is imported only when a method runs.
"""
