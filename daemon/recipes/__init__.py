"""Recipes: what a line makes right now. A recipe names a product: the class of the unified
model it is scored as, the model version (or alias) that must be serving the line, threshold
overrides, the views of the station that make up one part, and the part rules (deadline,
outcome of an incomplete part). `recipe` is the definition (pure), `store` keeps recipes and
each line's active one in Redis with the history of switches.

May import: `daemon.wire`, `daemon.models` and the top-level modules.
"""
