"""Numerical building blocks shared by every layer above: batched linear algebra over replicate chains
(``batched``) and the lazily imported PyTorch pieces (``neural``). They know nothing of specs or plug-ins."""
