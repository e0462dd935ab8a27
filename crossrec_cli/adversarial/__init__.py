"""Domain-adversarial alignment through a gradient-reversal layer."""

from crossrec_cli.adversarial.grl import DomainDiscriminator, GradReverse, grad_reverse, item_alignment_loss

__all__ = ["DomainDiscriminator", "GradReverse", "grad_reverse", "item_alignment_loss"]
