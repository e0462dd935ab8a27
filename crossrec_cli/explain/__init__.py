"""Explanations of a trained recommender's scores (``crossrec explain``): attributions over the
user's history and the items' text tokens, the user tower's attention, and a faithfulness check."""
