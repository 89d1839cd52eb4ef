"""Training models on a collection and the user's own judgments (``hybridsearch train``)."""
