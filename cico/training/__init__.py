"""Training: clip matching, the CiCo losses, and the torchrun engine.

Modules:

* :mod:`~cico.training.matcher`: absent-frame box supplementation and ``match_clip`` (spec §3.2-3.3).
* :mod:`~cico.training.losses`: :class:`~cico.training.losses.CiCoLoss`, every loss term of §3.4.
* :mod:`~cico.training.config`: :class:`~cico.training.config.TrainConfig`, the recipes, ``KEY=VALUE``.
* :mod:`~cico.training.engine`: :func:`~cico.training.engine.train` / ``Trainer`` (DDP, AMP, resume).
* :mod:`~cico.training.finetune`: checkpoint transfer with the class layer matched by name, ``freeze_at``.
* :mod:`~cico.training.schedule`, :mod:`~cico.training.sampler`, :mod:`~cico.training.state`,
  :mod:`~cico.training.init`: learning-rate schedule, resumable data order, checkpoints, initialisation.
"""
