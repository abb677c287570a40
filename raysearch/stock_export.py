"""An exported model that a stock transformers class describes, so that it loads with no remote code at all.

A pruned structure fits a stock `BertForSequenceClassification` / `RobertaForSequenceClassification` when the head
pools the first token (the stock heads do), no hidden dimension and no head was pruned (transformers 5 has no
`pruned_heads`; a layer's head size is hidden / heads), and every layer kept the same number of FFN units (the stock
`intermediate_size` is one number). The weights are then saved under the stock names; `raysearch_export.json` says
so, and `exported.load_exported` maps them back.
"""
STOCK_CLASSES = {"bert": "BertForSequenceClassification", "roberta": "RobertaForSequenceClassification"}


def stock_class(model_type: str, kept: dict, pooling: str, hidden_size: int, num_heads: int) -> str | None:
    """The stock class that describes this pruned structure, or None."""
    widths = {len(layer["intermediate"]) for layer in kept["layers"]}
    if model_type not in STOCK_CLASSES or pooling != "cls" or len(kept["hidden"]) != hidden_size:
        return None
    if any(len(layer["heads"]) != num_heads for layer in kept["layers"]) or len(widths) != 1 or 0 in widths:
        return None
    return STOCK_CLASSES[model_type]


def _renames(model_type: str) -> list[tuple[str, str]]:
    """(raysearch prefix, stock prefix), most specific first."""
    if model_type == "bert":
        return [("head.dense.", "bert.pooler.dense."), ("head.out.", "classifier."), ("backbone.", "bert.")]
    return [("head.dense.", "classifier.dense."), ("head.out.", "classifier.out_proj."), ("backbone.", "roberta.")]


def to_stock(state: dict, model_type: str) -> dict:
    return {_rename(k, _renames(model_type)): v for k, v in state.items()}


def from_stock(state: dict, model_type: str) -> dict:
    return {_rename(k, [(b, a) for a, b in _renames(model_type)]): v for k, v in state.items()}


def _rename(key: str, renames) -> str:
    return next((new + key[len(old):] for old, new in renames if key.startswith(old)), key)


def stock_config(backbone_config, kept: dict, num_labels: int, cls_name: str):
    """The stock config of the pruned model: the encoder's own, with the FFN width it kept."""
    config = backbone_config.__class__(**{**backbone_config.to_dict(), "intermediate_size": len(kept["layers"][0]["intermediate"])})
    config.num_labels = num_labels
    config.id2label, config.label2id = {i: str(i) for i in range(num_labels)}, {str(i): i for i in range(num_labels)}
    config.architectures = [cls_name]
    return config
