"""Evaluation: how good a generator's samples are, in a feature network's space.

`metrics.py` is the arithmetic (FID, KID, precision/recall, class statistics) on feature
vectors; `classifier.py` the feature network (bundled for MNIST, `dcgan classifier train` for
other data); `scoring.py` loads samples and references and scores them (`dcgan evaluate`);
`during_training.py` scores a run as it trains (`--eval-every`).
"""
