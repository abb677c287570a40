"""The config of an exported raysearch model: the base encoder's config and the units each layer kept. Shipped inside
every exported model folder: transformers only."""
from transformers import AutoConfig, PretrainedConfig

MODEL_TYPE = "raysearch-pruned"


class RaysearchPrunedConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, encoder: dict | None = None, structure: dict | None = None, head_hidden: int = 0, pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder or {}  # the base encoder's own config (model_type included)
        self.structure = structure or {}  # kept heads / FFN units per layer, kept hidden dims
        self.head_hidden = head_hidden
        self.pooling = pooling

    def encoder_config(self) -> PretrainedConfig:
        encoder = dict(self.encoder)
        return AutoConfig.for_model(encoder.pop("model_type"), **encoder)
