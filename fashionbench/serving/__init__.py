"""The promoted recommender: a bundle of everything one run needs to recommend (``bundle``) and the
recommender that answers favourites or photos from it (``recommender``)."""
