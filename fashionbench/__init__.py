"""fashionbench: a benchmark harness for a content-based women's-fashion recommender.

Item images go through a fine-tuned ResNet50; an inner layer gives each item an
embedding; one Annoy index per category holds the shop; users' favourite items are the
queries. See README.md for the pipeline and how to run it.
"""

__version__ = "0.1.0"
