from .controller import SparsityController
from .gates import GATE_KINDS, GateSet, exact_remaining
from .lagrangian import Lagrangian, target_sparsity_at
from .masked_encoder import GatedEncoder
from .size import EncoderShape, remaining_params
