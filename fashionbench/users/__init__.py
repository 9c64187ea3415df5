"""The users: simulated tastes or the course's dealt reviews (``simulation``), calibrated on real reviews
(``reviews``), their ratings and the one rule that makes a rating a favourite (``ratings``)."""
