"""``gradclip train``: the TensorFlow PTB language-model tutorial in PyTorch.

An application built on gradclip's public API (``import gradclip``): data
(:mod:`gradclip.lm.data`), model (:mod:`gradclip.lm.model`), configs
(:mod:`gradclip.lm.config`), training loop (:mod:`gradclip.lm.train`) and the
``train`` / ``evaluate`` / ``generate`` commands (:mod:`gradclip.lm.commands`).
See ``docs/ptb-reproduction.md``.
"""
