"""Text tasks beside recommendation: preference prediction (TALLRec style) and item classification.

``TASKS`` maps ``task.name`` to a handler ``(cfg, command, logger) -> metrics record``; the
finetune / transfer / evaluate recipes hand over to it for every task but recommendation. A new
task is one module in this package that registers its handler, plus ``conf/task/<name>.yaml``.
"""

from crossrec_cli.registry import Registry

TASKS: Registry = Registry("task", "task.name", "crossrec_cli.tasks")
