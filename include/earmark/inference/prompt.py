"""The CoPE-A prompt: plain completion text, no chat template.

The model's next token after the prompt is "1" (content matches a label of the
policy) or "0". Kept byte-exact with the published template; do not reformat.
"""

from __future__ import annotations

COPE_TEMPLATE = (
    "INSTRUCTIONS\n"
    "============\n"
    "\n"
    "Examine the given POLICY and determine if the given CONTENT meets the criteria for ANY of "
    'the LABELS. Answer "1" if yes, and "0" if no.\n'
    "\n"
    "\n"
    "POLICY\n"
    "======\n"
    "\n"
    "{policy}\n"
    "\n"
    "\n"
    "CONTENT\n"
    "=======\n"
    "\n"
    "{content}\n"
    "\n"
    "\n"
    "ANSWER\n"
    "======\n"
    "\n"
)

_CONTENT_SLOT = "{content}"


def build_prompt(policy: str, content: str) -> str:
    """Fill the template. Plain replacement, so braces in policy or content are safe."""
    prefix, suffix_template = split_prompt(policy)
    return prefix + render_suffix(suffix_template, content)


def split_prompt(policy: str) -> tuple[str, str]:
    """Return ``(prefix, suffix_template)``: the policy-only part and the rest.

    ``prefix`` is identical for every content under one policy (its KV cache can be
    shared); ``suffix_template`` still contains the ``{content}`` slot.
    """
    head, tail = COPE_TEMPLATE.split(_CONTENT_SLOT, 1)
    prefix = head.replace("{policy}", policy, 1)
    return prefix, _CONTENT_SLOT + tail


def render_suffix(suffix_template: str, content: str) -> str:
    """Fill the ``{content}`` slot of a suffix template from ``split_prompt``."""
    return suffix_template.replace(_CONTENT_SLOT, content, 1)
