"""Exported models in the Hugging Face ecosystem: a config class and a model class registered with transformers'
Auto classes, so that once this module is imported (raysearch imports it wherever it exports or loads a model)

    import raysearch.hf
    model = AutoModelForSequenceClassification.from_pretrained("runs/exp/models/TRIAL")
    tokenizer = AutoTokenizer.from_pretrained("runs/exp/models/TRIAL")

loads a pruned model with no `trust_remote_code`. A pruned encoder has a different number of heads and FFN units in
each layer, which no stock config can describe, so the config carries the base encoder's config and the kept units,
and the model re-applies that structure to a fresh encoder before the weights load (the same slicing as the export).
`raysearch` itself is not imported with torch, so that `status` and `analyze` start fast: the registration lives here.
"""
import torch
from transformers import (AutoConfig, AutoModel, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel)
from transformers.modeling_outputs import SequenceClassifierOutput

from .heads import ClassificationHead
from .pruning.surgery import apply_structure, slice_linear

MODEL_TYPE = "raysearch-pruned"


class RaysearchPrunedConfig(PretrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, encoder: dict | None = None, structure: dict | None = None, head_hidden: int = 0, pooling: str = "mean", **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder or {}  # the base encoder's own config (model_type included)
        self.structure = structure or {}  # kept heads / FFN units per layer, kept hidden dims (pruning.surgery.kept_units)
        self.head_hidden = head_hidden
        self.pooling = pooling

    def encoder_config(self) -> PretrainedConfig:
        encoder = dict(self.encoder)
        return AutoConfig.for_model(encoder.pop("model_type"), **encoder)


class RaysearchPrunedForSequenceClassification(PreTrainedModel):
    """A physically pruned encoder and its classification head (the state-dict keys of `exported.PrunedClassifier`)."""

    config_class = RaysearchPrunedConfig
    base_model_prefix = "backbone"

    def __init__(self, config: RaysearchPrunedConfig):
        super().__init__(config)
        encoder_config = config.encoder_config()
        self.backbone = AutoModel.from_config(encoder_config, add_pooling_layer=False)
        self.head = ClassificationHead(encoder_config.hidden_size, config.num_labels, pooling=config.pooling)
        self.head.out = torch.nn.Linear(config.head_hidden, config.num_labels)
        if config.structure:
            apply_structure(self.backbone, config.structure, encoder_config.hidden_size // encoder_config.num_attention_heads)
            self.head.dense = slice_linear(self.head.dense, cols=torch.tensor(config.structure["hidden"], dtype=torch.long))
        self.post_init()

    def _init_weights(self, module):
        pass  # every weight comes from the export; nothing is trained from scratch here

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, return_dict=None, **kwargs):
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        logits = self.head(hidden.last_hidden_state, attention_mask)
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register(MODEL_TYPE, RaysearchPrunedConfig, exist_ok=True)
AutoModelForSequenceClassification.register(RaysearchPrunedConfig, RaysearchPrunedForSequenceClassification, exist_ok=True)
