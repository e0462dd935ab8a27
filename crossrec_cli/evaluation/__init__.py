"""Full-ranking and candidate-list evaluation with Recall / NDCG / MRR at K."""

from crossrec_cli.evaluation.metrics import rank_metrics
from crossrec_cli.evaluation.ranking import candidate_ranks, full_ranks, read_candidates

__all__ = ["candidate_ranks", "full_ranks", "rank_metrics", "read_candidates"]
