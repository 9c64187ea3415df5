"""Indexes of the shop's item embeddings: one per category, behind one small interface.

As ann-benchmarks' ``BaseANN`` (fit, query, done), every backend implements the same few
methods (``base.CategoryIndex``), lives in its own module and has its own config file
(``configs/index/<kind>.yaml``), and is registered once (``registry.BACKENDS``):

- ``annoy`` (``annoy.py``): Spotify's Annoy, random-projection trees, as the course used;
- ``exact`` (``exact.py``): brute force, the reference every approximate index is measured against;
- ``hnsw`` (``hnsw.py``): HNSW graphs through faiss, an optional dependency.

A backend's config dataclass (an ``IndexConfig``) is its options, and its ``build(embeddings)``
makes a ``CategoryIndex``. Distances are "smaller is nearer" for every metric: for ``dot`` they
are the negative inner product (Annoy and faiss themselves report the inner product).
``shop.build_shop_index`` is the stage; ``quality`` measures an index against exact search;
``store`` writes and reads a run's indexes.
"""
