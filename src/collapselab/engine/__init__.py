"""The engine: a spec planned into cells, and each cell run as ``init`` then one ``step`` per generation."""
