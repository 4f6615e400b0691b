"""The GAN machinery every family shares (CycleGAN, IAMGAN, MFGAN); one module per concept.

=================  ===========================================================================
``contract``       :class:`TrainableGAN` (what a family implements), the ``GAN_METHODS`` registry
``config``         :class:`TrainConfig` (the loop and data), profiles, resolving a run's configs
``losses``         LSGAN and L1, and the per-sample weighted LSGAN terms (MFGAN's lambda_cor)
``pool_ema``       the discriminator's :class:`ImagePool`, the sampling :class:`EMA`, freezing nets
``data``           the two domains in memory (:func:`load_domain`) and the batch of each step
``checkpoint``     a run folder's checkpoint, :func:`load_gan`, the run's config hash
``fit``            the training loop (LR schedule, loss log, sample grids, checkpoints, exact resume)
``train``          :func:`train_gan`, the library side of ``mfrbench train-gen`` (resume policy, threads)
``generator``      :class:`GANMaskGenerator`: a trained run as a mask generator
=================  ===========================================================================

Conventions: images are ``(B, 3, S, S)`` float tensors in ``[-1, 1]``; *Face* -> *Mask* is the
forward direction (``G_M``), *Mask* -> *Face* the cycle (``G_F``); ``D_M`` judges masked faces,
``D_F`` unmasked ones (names of the MFGAN paper). Losses: LSGAN, L1 cycle and identity.
Optimisers: Adam, betas ``(0.5, 0.999)``, lr constant for the first ``decay_start`` fraction of
the steps then linearly to 0 (:func:`fit.linear_decay_lr`).

Import from the module that owns a name (``from mfrbench.generators.gan.contract import TrainableGAN``);
this package re-exports nothing, so each concept has one import path.
"""
