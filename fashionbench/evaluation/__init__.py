"""Evaluation: the classifier on the test split, and the recommendations of the model beside a ladder
of reference recommenders on every (user, category) pair, with every metric from one registry."""
