"""Decoder prompts ending in the question, and the answer-token ids looked up from the tokenizer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossrec_cli.errors import CrossrecError
from crossrec_cli.registry import Registry

ALPACA = ("Below is an instruction that describes a task, paired with an input that provides further "
          "context. Write a response that appropriately completes the request.\n\n"
          "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")


def answer_token_ids(tokenizer: Any, answers: list[str] | tuple[str, ...]) -> list[int]:
    """One vocabulary id per answer word (e.g. ["Yes", "No"]), as the tokenizer encodes it at the
    start of the response. A word that is not exactly one token is an error: summing or picking
    sub-tokens would silently score something else."""
    ids = []
    for word in answers:
        got = tokenizer.encode(word, add_special_tokens=False)
        if len(got) != 1:
            pieces = tokenizer.convert_ids_to_tokens(got)
            raise CrossrecError(
                "task.answers", f"answer {word!r} is {len(got)} tokens {pieces} for this tokenizer",
                "choose answer words that are single tokens (e.g. task.answers=[Y,N])",
            )
        ids.append(int(got[0]))
    if len(set(ids)) != len(ids):
        raise CrossrecError("task.answers", f"answers {list(answers)} share a token id {ids}", "choose distinct words")
    return ids


def _alpaca(tokenizer: Any, instruction: str, text: str) -> str:
    return ALPACA.format(instruction=instruction, input=text)


def _chat(tokenizer: Any, instruction: str, text: str) -> str:
    if not getattr(tokenizer, "chat_template", None):
        return _alpaca(tokenizer, instruction, text)
    msgs = [{"role": "user", "content": f"{instruction}\n\n{text}"}]
    return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


# task.prompt.style: (tokenizer, instruction, input text) -> the prompt
PROMPT_STYLES: Registry[Callable[[Any, str, str], str]] = Registry("prompt style", "task.prompt.style")
PROMPT_STYLES.add("chat", _chat)
PROMPT_STYLES.add("alpaca", _alpaca)


def build_prompt(tokenizer: Any, instruction: str, text: str, style: str = "chat") -> str:
    """The full prompt whose next token is the answer.

    ``chat``: the tokenizer's chat template (instruction-tuned models such as SmolLM2-Instruct)
    with the generation prompt added, falling back to ``alpaca`` when it has none; ``alpaca``:
    TALLRec's Alpaca template.
    """
    return PROMPT_STYLES.get(style)(tokenizer, instruction, text)
