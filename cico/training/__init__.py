"""Training: clip matching, the CiCo losses, and the torchrun engine.

Modules:

* :mod:`~cico.training.matcher`: absent-frame box supplementation and ``match_clip``.
* :mod:`~cico.training.losses`: :class:`~cico.training.losses.CiCoLoss`, every loss term.
* :mod:`~cico.training.config`: :class:`~cico.training.config.TrainConfig`, the recipes, ``KEY=VALUE``.
* :mod:`~cico.training.engine`: :func:`~cico.training.engine.train`, one run from set-up to ``final.pt``.
* :mod:`~cico.training.setup`: device, precision, data checks, model, initialisation, optimiser.
* :mod:`~cico.training.loop`: the steps (micro-batches, DDP, accumulation) and the hooks between them;
  the periodic evaluation is a callable the caller gives (:data:`~cico.training.loop.Evaluator`).
* :mod:`~cico.training.state`: checkpoints and the state they hold; :mod:`~cico.training.preemption`:
  SIGTERM/SIGINT; :mod:`~cico.training.run_log`: metrics; :mod:`~cico.training.distributed`: ranks.
* :mod:`~cico.training.finetune`: checkpoint transfer with the class layer matched by name, ``freeze_at``.
* :mod:`~cico.training.schedule`, :mod:`~cico.training.sampler`, :mod:`~cico.training.init`:
  learning-rate schedule, resumable data order, initialisation.
"""
