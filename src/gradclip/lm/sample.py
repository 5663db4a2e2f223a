"""Sampling text from a trained language model (``gradclip generate``)."""

from __future__ import annotations

import torch

from gradclip.errors import UserError
from gradclip.lm.data import EOS, UNK, tokenize
from gradclip.lm.model import PTBModel

__all__ = ["sample"]


@torch.no_grad()
def sample(
    model: PTBModel,
    vocab: list[str],
    tokens: str,
    prompt: str = "",
    length: int = 100,
    temperature: float = 1.0,
    seed: int = 0,
) -> str:
    """Sample ``length`` tokens after ``<eos>`` and ``prompt``, from softmax(logits / temperature).

    .. math:: p(w) \\propto \\exp(z_w / \\tau)

    Args:
        model: the language model (put in eval mode by the caller).
        vocab: its symbols, id order.
        tokens: ``"word"`` (joined by spaces) or ``"char"`` (joined as they are).
        prompt: text to condition on, tokenised like the corpus.
        length: tokens to sample.
        temperature: τ > 0.
        seed: the sampling generator's seed.

    Returns:
        The prompt and the sampled continuation, ``<eos>`` as a line break.

    Example:
        >>> model = PTBModel(vocab_size=3, hidden_size=4, num_layers=1).eval()
        >>> text = sample(model, ["a", "b", "<eos>"], "word", "a b", length=5, seed=1)
        >>> text.split()[:2], len(text.split()) <= 7
        (['a', 'b'], True)
    """
    if not temperature > 0:
        raise UserError(f"--temperature must be positive, got {temperature!r}")
    word_to_id = {w: i for i, w in enumerate(vocab)}
    words = tokenize(prompt, tokens) if prompt else []
    unknown = [w for w in words if w not in word_to_id and UNK not in word_to_id]
    if unknown:
        raise UserError(f"--prompt: {unknown[0]!r} is not in the vocabulary")
    start = [word_to_id.get(EOS, 0)] + [word_to_id.get(w, word_to_id.get(UNK, 0)) for w in words]
    device = model.embedding.weight.device
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[str] = list(words)
    logits, state = model(torch.tensor(start, device=device).unsqueeze(1), model.init_state(1))
    last = logits[-1, 0]
    for _ in range(length):
        probs = torch.softmax(last.double() / temperature, dim=-1)
        if not torch.isfinite(probs).all():
            raise UserError("the model's output is not finite (the run diverged)")
        idx = int(torch.multinomial(probs, 1, generator=gen))
        out.append(vocab[idx])
        logits, state = model(torch.tensor([[idx]], device=device), state)
        last = logits[-1, 0]
    text = ("" if tokens == "char" else " ").join("\n" if w == EOS else w for w in out)
    return "\n".join(line.strip() for line in text.split("\n"))
