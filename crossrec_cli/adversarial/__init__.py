"""Domain-adversarial alignment, chosen by ``adversarial=<name>`` (conf/adversarial/<name>.yaml).

Each method registers a builder in ``ADVERSARIAL``:
``builder(model, domains, settings) -> extra_loss(model, domain) | None``. The builder attaches
whatever it trains to ``model.aux`` so the optimiser and checkpoints carry it. A new method is one
module in this package plus its config file.
"""

from crossrec_cli.adversarial.base import ADVERSARIAL, build_adversary
from crossrec_cli.adversarial.grl import DomainDiscriminator, GradReverse, grad_reverse, item_alignment_loss

__all__ = ["ADVERSARIAL", "DomainDiscriminator", "GradReverse", "build_adversary", "grad_reverse",
           "item_alignment_loss"]
