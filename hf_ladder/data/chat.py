"""The chat template the ladder gives tokenizers that have none: ChatML, with `{% generation %}` markers
around each assistant turn so TRL's `assistant_only_loss` can mask everything else.

    <bos><|im_start|>user
    How now?<|im_end|>
    <|im_start|>assistant
    Well, my lord.<|im_end|>

The assistant turn ends with `<|im_end|>`, the end-of-turn token; the tokenizer trained by the pretrain
stage reserves both markers, so no embedding is added.
"""

from __future__ import annotations

from hf_ladder.data.tokenizer import adds_bos

END_OF_TURN = "<|im_end|>"

CHATML_WITH_GENERATION = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "<|im_start|>assistant\n{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}\n"
    "{% else %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def ensure_chat_template(tokenizer) -> bool:
    """Give `tokenizer` the ChatML template above unless it has a template already.

    Returns:
        True when the template was added.
    """
    if tokenizer.chat_template:
        return False
    tokenizer.chat_template = CHATML_WITH_GENERATION
    return True


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The text a model continues for `messages` (the template with its generation prompt), without a
    leading bos that the tokenizer adds itself when generating."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    bos = tokenizer.bos_token
    return text[len(bos):] if adds_bos(tokenizer) and text.startswith(bos) else text


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end an assistant turn: eos, and `<|im_end|>` when it is a single token."""
    ids = [tokenizer.eos_token_id]
    im_end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id and im_end not in ids:
        ids.append(im_end)
    return ids
