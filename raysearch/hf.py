"""Exported models in the Hugging Face ecosystem, with raysearch installed: importing this module registers the
exported config and model classes (raysearch.remote_code) with transformers' Auto classes, so that

    import raysearch.hf
    model = AutoModelForSequenceClassification.from_pretrained("runs/exp/models/TRIAL")
    tokenizer = AutoTokenizer.from_pretrained("runs/exp/models/TRIAL")

loads a pruned model without `trust_remote_code`. Without raysearch, the folder's own copy of that code loads it
(`trust_remote_code=True`). `raysearch` itself is not imported with torch, so that `status` and `analyze` start fast:
the registration lives here.
"""
from transformers import AutoConfig, AutoModelForSequenceClassification

from .remote_code.configuration_raysearch_pruned import MODEL_TYPE, RaysearchPrunedConfig
from .remote_code.modeling_raysearch_pruned import RaysearchPrunedForSequenceClassification

__all__ = ["MODEL_TYPE", "RaysearchPrunedConfig", "RaysearchPrunedForSequenceClassification"]

AutoConfig.register(MODEL_TYPE, RaysearchPrunedConfig, exist_ok=True)
AutoModelForSequenceClassification.register(RaysearchPrunedConfig, RaysearchPrunedForSequenceClassification, exist_ok=True)
