"""Task heads on top of an encoder's hidden states: plain torch modules, shared by the loop and exported models."""
import torch
import torch.nn.functional as F
from torch import nn


class ClassificationHead(nn.Module):
    """Pool the tokens (mean over the attention mask, or the first token), then dense + tanh + dropout + linear.

    Mean pooling is the default: sentence encoders such as all-MiniLM-L6-v2 are trained with it, so a
    fresh head learns from useful features at once; `cls` is the classic BERT choice.
    """

    def __init__(self, hidden: int, num_labels: int, dropout: float = 0.1, pooling: str = "mean"):
        super().__init__()
        self.pooling = pooling
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_labels)
        for layer in (self.dense, self.out):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def forward(self, hidden_states, attention_mask=None):
        if self.pooling == "mean" and attention_mask is not None:
            mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
            pooled = (hidden_states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            pooled = hidden_states[:, 0]
        return self.out(self.dropout(torch.tanh(self.dense(pooled))))


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
