"""What the VLM is asked: caption templates, the edit-pair instruction prompt, and ``--prompt`` escapes."""

from __future__ import annotations

TEMPLATES: dict[str, str] = {
    "detailed": (
        "Describe this image as a caption for training an image generator.\n"
        "- Write plain, natural sentences: no lists, headings or markup.\n"
        "- Name the objects with their colours, materials, shapes and positions, how they relate to each "
        "other, and the setting, lighting and background.\n"
        "- Quote any text that is visible in the image exactly as written, without translating it.\n"
        "- Describe only what is there; do not guess or generalise."
    ),
    "short": "Write one short sentence (at most 20 words) that says what this image shows.",
    "tags": (
        "List the content of this image as comma-separated tags, most important first: subjects, "
        "objects, colours, setting, composition. Write only the tags, lower case, no sentences."
    ),
    "style_neutral": (
        "Describe what this image shows (subjects, objects, their colours, positions and the setting) in "
        "plain sentences. Do not mention the art style, medium, rendering, camera, lighting mood or image "
        "quality: describe the content only."
    ),
}
DEFAULT_TEMPLATE = "detailed"

EDIT_PAIR_PROMPT = (
    "The last picture is an edited version of the picture(s) before it. Write the editing instruction "
    "that turns the first picture(s) into the last one, as one imperative sentence a person would give "
    "an image editor (for example: Replace the jacket with a red leather one). Mention only what "
    "changes, not what stays the same. Write only the instruction."
)


def caption_prompt(prompt: str | None, template: str, edit_pairs: bool = False) -> str:
    """The text the VLM gets: `prompt` (``\\n`` written as two characters becomes a new line, as in the
    reference's ``--prompt``) when given, else the edit-pair prompt or the template's."""
    if prompt:
        return prompt.replace("\\n", "\n")
    if edit_pairs:
        return EDIT_PAIR_PROMPT
    return TEMPLATES[template]


def with_trigger(caption: str, trigger_word: str | None) -> str:
    """The caption with the trigger word in front (``"trigger, caption"``), unless it already starts so."""
    if not trigger_word:
        return caption
    if caption == trigger_word or caption.startswith(trigger_word + ","):
        return caption
    return f"{trigger_word}, {caption}" if caption else trigger_word
