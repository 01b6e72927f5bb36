"""The optimizer of a run: its named parameter groups (`build_optimizer`) and Muon for the hidden matrices with AdamW
for everything else, in one optimizer (recipe `train.optimizer: muon`).

Muon (Jordan et al. 2024; "Muon is Scalable for LLM Training", Liu et al. 2025) replaces each 2-D weight's update
by the orthogonalized momentum (Newton-Schulz iterations), which in those reports reaches AdamW's loss with
roughly half to two thirds of the tokens. Embeddings, output heads, norm gains and biases are not hidden matrices
and keep AdamW, as both reports prescribe.

Why not `torch.optim.Muon` itself: it runs the Newton-Schulz matmuls in bfloat16, which on CPUs without bf16
matrix units is ~100x slower than fp32 (and it would need a second optimizer object next to AdamW, which the
loop's checkpoint, lr schedule and skip logic treat as one). Here the iteration runs in bfloat16 on CUDA and in
fp32 elsewhere; the AdamW half calls torch's own fused `adamw`, so its arithmetic and state are AdamW's.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adamw import adamw

# The parameter groups, in the order a checkpoint's optimizer state is matched by (torch matches groups by position,
# so this order never changes: a new group goes at the end). `encoder_*`: the encoder's part of a model whose
# encoder learns at its own rate (train.encoder_lr_scale); `token_embedding`: the token embedding matrix at its own
# rate (train.embedding_lr_scale); `muon`: hidden matrices that take Muon steps (train.optimizer=muon).
GROUP_ORDER = ("decayed", "encoder_decayed", "not_decayed", "encoder_not_decayed", "muon", "encoder_muon",
               "token_embedding", "encoder_token_embedding")

# The quintic Newton-Schulz coefficients of Jordan's Muon (also torch.optim.Muon's defaults).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrix: torch.Tensor, steps: int = 5, eps: float = 1e-7) -> torch.Tensor:
    """Approximately U V^T of each matrix = U S V^T, by `steps` quintic Newton-Schulz iterations.
    (m, n) -> (m, n), or a stack (k, m, n) -> (k, m, n), each matrix on its own (batched matmuls: one kernel for
    all the same-shaped matrices of a model, where a loop would launch one per matrix)."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.to(torch.bfloat16 if matrix.is_cuda else torch.float32)
    single = x.ndim == 2
    if single:
        x = x.unsqueeze(0)
    tall = x.size(-2) > x.size(-1)
    if tall:  # iterate on the wide orientation: the Gram matrix is the smaller side squared
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    if tall:
        x = x.mT
    return (x.squeeze(0) if single else x).to(matrix.dtype)


class MuonWithAdamW(torch.optim.Optimizer):
    """One optimizer: param groups with `muon=True` take Muon steps, the others AdamW steps.

    Muon's update is scaled by 0.2 * sqrt(max(rows, cols)) (Liu et al.'s rule), which gives it about the update
    RMS of AdamW, so one `lr` and one `weight_decay` serve both halves, as in that report. Decoupled weight decay as
    in AdamW: the weights shrink by lr * weight_decay each step."""

    def __init__(self, params, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.95, ns_steps: int = 5):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, momentum=momentum,
                        ns_steps=ns_steps, muon=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"]:
                for parameter in group["params"]:
                    if parameter.ndim != 2:
                        raise ValueError(f"Muon steps 2-D matrices; a parameter of shape {tuple(parameter.shape)} "
                                         "was put in a muon group")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # `found_inf` (a 0-dim tensor, nonzero: skip), set by the caller as torch's GradScaler sets it on fused
        # AdamW: the step then leaves weights and state as they were, decided on the device without a host read.
        found_inf = getattr(self, "found_inf", None)
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p.grad is not None]
            if group["muon"]:
                self.muon_step(group, with_grad, found_inf)
            else:
                self.adamw_step(group, with_grad, found_inf)
        return loss

    def muon_step(self, group: dict, parameters: list[torch.Tensor], found_inf: torch.Tensor | None) -> None:
        lr, momentum = group["lr"], group["momentum"]
        # A skipped step (found_inf nonzero) keeps buffers and weights: where(), not a multiply, so NaNs stay out.
        keep = None if found_inf is None else found_inf == 0
        by_shape: dict[tuple, list[torch.Tensor]] = {}  # (device, *shape) -> parameters
        for parameter in parameters:
            by_shape.setdefault((parameter.device, *parameter.shape), []).append(parameter)
        for same_shape in by_shape.values():  # one batched Newton-Schulz per shape: (k, m, n)
            buffers = []
            for parameter in same_shape:
                state = self.state[parameter]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(parameter)
                buffers.append(state["momentum_buffer"])
            grads = torch.stack([parameter.grad for parameter in same_shape])
            new_buffers = torch.stack(buffers).lerp(grads, 1 - momentum)
            updates = orthogonalize(grads.lerp(new_buffers, momentum), group["ns_steps"])  # Nesterov momentum
            scale = lr * 0.2 * math.sqrt(max(same_shape[0].shape))
            for parameter, buffer, new_buffer, update in zip(same_shape, buffers, new_buffers, updates):
                new_parameter = parameter * (1 - lr * group["weight_decay"]) - scale * update
                if keep is not None:
                    new_buffer = torch.where(keep, new_buffer, buffer)
                    new_parameter = torch.where(keep, new_parameter, parameter)
                buffer.copy_(new_buffer)
                parameter.copy_(new_parameter)

    def adamw_step(self, group: dict, parameters: list[torch.Tensor], found_inf: torch.Tensor | None) -> None:
        exp_avgs, exp_avg_sqs, steps = [], [], []
        for parameter in parameters:
            state = self.state[parameter]
            if not state:  # fused AdamW's own state layout (its step count lives on the parameter's device)
                state["step"] = torch.zeros((), dtype=torch.float32, device=parameter.device)
                state["exp_avg"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(parameter, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not parameters:
            return
        beta1, beta2 = group["betas"]
        # Fused: the kernel torch.optim.AdamW(fused=True) runs (CPU and CUDA), the one that honours found_inf.
        adamw(parameters, [p.grad for p in parameters], exp_avgs, exp_avg_sqs, [], steps, fused=True,
              found_inf=found_inf, amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"],
              weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)


def build_optimizer(model: torch.nn.Module, train, fused: bool) -> torch.optim.Optimizer:
    """AdamW (or MuonWithAdamW) over the named groups of GROUP_ORDER for the recipe's `train` section; each group
    carries its `name`, `weight_decay` and `lr_scale` (the loop sets its lr to the step's lr x lr_scale).

    Weight decay on matrices only (norm gains, biases and embeddings are not decayed). With `train.optimizer: muon`
    the decayed matrices take Muon steps, except the output layer: Muon's authors keep the first and last layers on
    AdamW. A tied output layer is the token embedding (AdamW already); an untied one is `get_output_embeddings()`,
    and a matrix with a side of 1 (a one-logit head) is one too."""
    roles = ParameterRoles(model, train)
    members: dict[str, list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            members.setdefault(roles.group_of(name, parameter), []).append(parameter)
    groups = []
    for name in GROUP_ORDER:
        if name not in members:
            continue
        role = name.removeprefix("encoder_")
        groups.append({
            "name": name,
            "params": members[name],
            "weight_decay": train.weight_decay if role in ("decayed", "muon") else 0.0,
            "lr_scale": ((train.encoder_lr_scale if name != role else 1.0)
                         * (train.embedding_lr_scale if role == "token_embedding" else 1.0)),
            **({"muon": True} if role == "muon" else {}),
        })
    if train.optimizer == "muon":
        return MuonWithAdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.eps)
    extra = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=train.lr, betas=(train.beta1, train.beta2), eps=train.eps, **extra)


class ParameterRoles:
    """Which group of GROUP_ORDER a parameter belongs to, by identity: the encoder's parameters (with tied
    embeddings that includes the shared matrix), the token embedding (the decoder names it embed_tokens; tied, it
    is also the output matrix) and the output layer."""

    def __init__(self, model: torch.nn.Module, train):
        self.train = train
        self.encoder = set()
        if train.encoder_lr_scale != 1.0:
            self.encoder = {id(parameter) for parameter in model.get_encoder().parameters()}
        try:
            self.token_embedding = {id(parameter) for parameter in model.get_input_embeddings().parameters()}
        except NotImplementedError:  # a model that reads float vectors has no token embedding
            self.token_embedding = set()
        self.output = set()
        if train.optimizer == "muon" and hasattr(model, "get_output_embeddings") and model.get_output_embeddings():
            self.output = {id(parameter) for parameter in model.get_output_embeddings().parameters()}

    def group_of(self, name: str, parameter: torch.Tensor) -> str:
        # Anything under an "embeddings" module (our encoder's positions, BERT-style embedding blocks) is not decayed.
        decayed = parameter.ndim >= 2 and "embeddings" not in name and id(parameter) not in self.token_embedding
        prefix = "encoder_" if id(parameter) in self.encoder else ""
        if self.train.embedding_lr_scale != 1.0 and id(parameter) in self.token_embedding:
            return prefix + "token_embedding"
        if (self.train.optimizer == "muon" and decayed and parameter.ndim == 2 and min(parameter.shape) > 1
                and id(parameter) not in self.output):
            return prefix + "muon"
        return prefix + ("decayed" if decayed else "not_decayed")
