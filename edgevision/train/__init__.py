"""Training on the recipe's data (CPU-friendly), used by `edgevision train` and by compile."""
