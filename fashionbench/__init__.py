"""fashionbench: a benchmark harness for a content-based women's-fashion recommender.

Item images go through a fine-tuned ResNet50; an inner layer gives each item an
embedding; one Annoy index per category holds the shop; users' favourite items are the
queries. README.md says how to run it; docs/ (an MkDocs site) is the reference, and
docs/architecture.md maps the packages.
"""

__version__ = "0.1.0"

# Before anything imports TensorFlow: a parallel sweep's worker takes one GPU of the pool
# (fashionbench.runtime.gpu_pool explains why it must be here); without a pool this does nothing.
from fashionbench.runtime.gpu_pool import claim_from_environment  # noqa: E402

claim_from_environment()
