"""The TensorFlow PTB tutorial's language model, trained with gradclip's clippers.

An application built on gradclip's public API: configs (:mod:`gradclip.lm.config`),
corpora (:mod:`gradclip.lm.data`), the model (:mod:`gradclip.lm.model`), the
training loop (:func:`train`, :func:`resume` in :mod:`gradclip.lm.train`) and
the run directory (:mod:`gradclip.lm.rundir`, read with :func:`read_run`).
``gradclip train`` / ``evaluate`` / ``generate`` are thin shells over these.
See ``docs/training.md`` and ``docs/ptb-reproduction.md``.
"""

from gradclip.lm.config import LMConfig, load_config
from gradclip.lm.data import Corpus, load_corpus
from gradclip.lm.rundir import Run, read_run
from gradclip.lm.train import RunOptions, RunResult, resume, train

__all__ = [
    "Corpus",
    "LMConfig",
    "Run",
    "RunOptions",
    "RunResult",
    "load_config",
    "load_corpus",
    "read_run",
    "resume",
    "train",
]
