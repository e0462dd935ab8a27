"""``python -m crossrec_cli <command> ...``: the same as ``crossrec``, for launchers that start a
module (``torchrun --nproc_per_node 2 -m crossrec_cli finetune ...``)."""

from crossrec_cli.cli import main

main()
