"""Private training, chosen by ``privacy=<name>`` (conf/privacy/<name>.yaml).

Each method registers a builder in ``PRIVACY``:
``builder(settings, context) -> PrivacyMethod | None`` (``none``: nothing changes). A method
turns the next-item objective into its private version (``PrivacyMethod.wrap``) and reports what
it spent (``record``: metrics.json's ``privacy``). A new method is one module in this package plus
its config file.
"""

from crossrec_cli.privacy.base import PRIVACY, PrivacyMethod, TrainingContext, build_privacy

__all__ = ["PRIVACY", "PrivacyMethod", "TrainingContext", "build_privacy"]
