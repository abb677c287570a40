"""The code every exported model folder carries (with `auto_map` in its config.json), so that it loads with only torch
and transformers installed: `AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True)`.
These modules import nothing of raysearch, only each other (relatively); raysearch imports its head and slicing from
here, so the shipped code is the code that was tested."""
