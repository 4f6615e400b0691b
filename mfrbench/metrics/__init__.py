"""Face-recognition metrics: pure numpy functions, tested against scikit-learn and hand cases.

Conventions (every function here):

* scores follow **"higher = more similar"**; a distance must be negated by the caller
  (:func:`mfrbench.metrics.verification.similarity` does it for the ``euclidean`` metric);
* a pair is **accepted** when ``score >= threshold`` (ties accepted, for both classes);
* rates are fractions in ``[0, 1]``; undefined results warn with
  :class:`UndefinedMetricWarning` and return NaN, never 0.

Modules: :mod:`.roc` (the one ROC primitive, TAR@FAR, AUC, EER, streamed all-pairs counts),
:mod:`.bootstrap` (identity-bootstrap confidence intervals, the one resampling scheme),
:mod:`.verification` (k-fold accuracy, also from per-fold histograms; block-wise scoring),
:mod:`.identification` (Rank-k, CMC), :mod:`.quality` (SSIM/PSNR on the non-mask area,
Frechet distance, KID).
"""

from mfrbench.metrics.bootstrap import bootstrap_rank_ci, bootstrap_tar_ci
from mfrbench.metrics.identification import cmc_curve, identification_ranks, rank_k_accuracy
from mfrbench.metrics.roc import (
                                  FARResolutionWarning,
                                  StreamedROC,
                                  UndefinedMetricWarning,
                                  eer,
                                  operating_points,
                                  roc_auc,
                                  roc_curve,
                                  streamed_roc,
                                  tar_at_far,
)
from mfrbench.metrics.verification import kfold_accuracy_from_histograms, pair_scores, similarity, verification_accuracy

__all__ = [
    "FARResolutionWarning", "StreamedROC", "UndefinedMetricWarning", "bootstrap_rank_ci", "bootstrap_tar_ci",
    "cmc_curve", "eer", "identification_ranks", "kfold_accuracy_from_histograms", "operating_points", "pair_scores",
    "rank_k_accuracy", "roc_auc", "roc_curve", "similarity", "streamed_roc", "tar_at_far", "verification_accuracy",
]
