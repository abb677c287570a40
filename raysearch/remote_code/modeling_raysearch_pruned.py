"""An exported raysearch model for transformers' Auto classes: a fresh encoder of the base config, sliced to the kept
units before the weights load, and its classification head. Shipped inside every exported model folder."""
import torch
from transformers import AutoModel, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from .configuration_raysearch_pruned import RaysearchPrunedConfig
from .pruned_structure import ClassificationHead, apply_structure, slice_linear


class RaysearchPrunedForSequenceClassification(PreTrainedModel):
    """A physically pruned encoder and its classification head (state-dict keys `backbone.*` and `head.*`)."""

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
