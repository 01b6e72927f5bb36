"""Muon for the hidden matrices, AdamW for everything else, in one optimizer (recipe `train.optimizer: muon`).

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
