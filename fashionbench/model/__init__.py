"""The classifier: ResNet50 and the course's head (``classifier``), its options (``schema``), the lean
format a run stores it in (``parts``), item embeddings (``embed``) and the cut at the freeze boundary
(``freeze_split``)."""
