"""Parameter groups of a gated encoder: what can be transferred between branches."""
import re


# Names are relative to a GatedEncoder (backbone.* and gates.*); order matters (LayerNorm first).
_RULES = (
    (re.compile(r"^gates\."), "masks"),
    (re.compile(r"\.LayerNorm\.(weight|bias)$"), "layernorm"),
    (re.compile(r"^backbone\.embeddings\."), "embeddings"),
    (re.compile(r"\.attention\.(self\.(query|key|value)|output\.dense)\.(weight|bias)$"), "attention"),
    (re.compile(r"\.(intermediate\.dense|layer\.\d+\.output\.dense)\.(weight|bias)$"), "ffn"),
)


def group_of(name: str) -> str:
    # the embeddings' own LayerNorm belongs to `embeddings` (docs/METHOD.md), not `layernorm`
    if name.startswith("backbone.embeddings."):
        return "embeddings"
    for pattern, group in _RULES:
        if pattern.search(name):
            return group
    raise ValueError(f"parameter {name!r} belongs to no transfer group; raysearch supports BERT-family encoders")


def names_in_groups(encoder, groups) -> list[str]:
    wanted = set(groups)
    return [name for name, _ in encoder.named_parameters(remove_duplicate=False) if group_of(name) in wanted]
