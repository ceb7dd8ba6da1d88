"""The ranking model (MMoE and its shared-bottom baseline): the shared pieces, one module per noun.

* :mod:`dailyrec.ranking.calibration`: undoing negative down-sampling on predictions (He et al. 2014);
* :mod:`dailyrec.ranking.samples`: the labelled impression rows, their down-sampling and label statistics;
* :mod:`dailyrec.ranking.inputs`: the training rows streamed as integer ids into ``tf.data`` (``train_mmoe``);
* :mod:`dailyrec.ranking.artifacts`: where a trained model's Keras / SavedModel files live, its training rate;
* :mod:`dailyrec.ranking.evaluation`: AUC / log loss per task, calibrated predictions, the publish gate.

Used by the ranking steps (``tasks/ranking/*``, ``tasks/serving/score_check``), the scorer
(:mod:`dailyrec.scoring`) and ``bench/mmoe.py``. The package and its modules are light at import
(numpy and the config only): pyarrow and TensorFlow are imported inside the functions that need
them. The tasks, ``("click", "conversion")``, are :data:`dailyrec.config.RANKING_TASKS`. See docs/ranking.md.
"""

NAME = "mmoe"
"""The ranking model's name in the store: ``models/mmoe``, ``eval/mmoe``, ``registry/mmoe``."""
BASELINE = "shared_bottom"
"""The baseline's kind (``models.ranking.RankingModel(kind=...)``) and its sub-folder of the model dir."""
