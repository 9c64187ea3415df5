"""Fine-tuning: ``fit`` trains the classifier (timed), on the frozen trunk's cached activations where it
can (``trunk_cache``); ``schema`` holds the ``train.*`` options."""
