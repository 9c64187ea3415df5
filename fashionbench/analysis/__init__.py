"""The read side's statistics: which configuration recommends best, with its noise, floor and ceiling.

``comparison`` (the two questions and the verdict), ``stats`` (paired and replicate tests),
``variance`` (where the noise comes from, calibrated tests, the planner), ``calibration`` (training
noise stored as a run), ``gate`` (promotion), ``design`` (what a study varied), ``study`` (reading
a study from the store), ``report``/``figures``/``documents``/``index_cost`` (what they show).
"""
