"""The MLM head of a masked-language-modelling transfer task. The classification head is shared by the loop and
exported models, so it lives in the code exported folders carry (raysearch.remote_code.pruned_structure)."""
import torch
import torch.nn.functional as F
from torch import nn


class MLMHead(nn.Module):
    """BERT-style MLM head whose decoder is tied to the branch's word embeddings."""

    def __init__(self, hidden: int, word_embeddings: nn.Embedding, eps: float = 1e-12):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.layer_norm = nn.LayerNorm(hidden, eps=eps)
        self.bias = nn.Parameter(torch.zeros(word_embeddings.num_embeddings))
        # a list keeps the embedding out of this module's parameters; its weight is read at
        # call time so that tying and detaching of the embeddings group apply here too
        self._embeddings = [word_embeddings]

    def forward(self, hidden_states):
        h = self.layer_norm(F.gelu(self.dense(hidden_states)))
        return h @ self._embeddings[0].weight.t() + self.bias
