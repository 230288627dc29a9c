"""Fairness: a correct solution written in another style than the instructor's scores every
point of every visible *and* hidden check.

Each row of :data:`STYLES` is a student's correct answer to some of an assignment's cells,
written the way students write them: float64 inside and cast back, ``torch.var_mean``,
``rsqrt``, ``lerp_`` for the running statistics, ``unbiased=False`` instead of
``correction=0``, reductions over a tuple of dimensions or after a reshape, another but
equivalent formula for a backward pass or a variance (in one pass, ``mean(x**2) -
mean(x)**2``), another way to draw a random mask. The test runs that answer (with the
instructor's solution for the other cells) through every autograded cell of
``solutions/<assignment>`` that uses it, hidden tests included, exactly as nbgrader would,
and asserts that each cell scores its full points.
"""
from __future__ import annotations

import ast
import inspect
import re

import pytest

from conftest import code_cells, graded_cells, run_cell
from coursekit import course

pytestmark = pytest.mark.slow   # see pyproject.toml's markers: `make test-fast` leaves these out

# every assignment of the course, except those whose table of styles has a file of its own
TABLES_ELSEWHERE = {"scaling": "tests/test_fairness_scaling.py",
                    "early_stopping": "tests/test_grading_early_stopping.py"}
ASSIGNMENTS = [a for a in course.ASSIGNMENTS if a not in TABLES_ELSEWHERE]


# --- running a notebook's autograded cells on a student's code ------------------------------

def student_namespace(assignment: str, answers: dict[str, str], style: str) -> dict:
    """The kernel of a student whose answer cells are the solution's, except ``answers``
    (``{grade_id: source}``), run in the notebook's order."""
    assert set(answers) <= set(answer_cells(assignment)), f"{style}: no such answer cell {set(answers)}"
    namespace: dict = {}
    for cell in code_cells(assignment):
        meta = cell["metadata"].get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if grade_id == "imports" or meta.get("solution"):
            run_cell(answers.get(grade_id, "".join(cell["source"])), namespace, f"<{style}: cell {grade_id}>")
    return namespace


def answer_cells(assignment: str) -> list[str]:
    """The grade_ids of the code cells a student writes."""
    return [c["metadata"]["nbgrader"]["grade_id"] for c in code_cells(assignment)
            if c["metadata"].get("nbgrader", {}).get("solution")]


def _defined(source: str) -> set[str]:
    return {node.name for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


# --- the styles -----------------------------------------------------------------------------

BATCH_NORM_FLOAT64 = '''
def batch_norm(input, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """float64 inside, cast back; var_mean over a (C, m) view; rsqrt; lerp_ for the running stats."""
    x = input.double()
    C = x.shape[1]
    shape = (1, C) + (1,) * (x.dim() - 2)
    if training:
        flat = x.transpose(0, 1).reshape(C, -1)            # (C, m)
        var, mean = torch.var_mean(flat, dim=1, correction=0)
        m = flat.shape[1]
        with torch.no_grad():
            if running_mean is not None:
                running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            if running_var is not None:
                running_var.lerp_((var * m / (m - 1)).to(running_var.dtype), momentum)
    else:
        mean, var = running_mean.double(), running_var.double()
    out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        out = out * weight.double().view(shape)
    if bias is not None:
        out = out + bias.double().view(shape)
    return out.to(input.dtype)
'''

BATCH_NORM_FUSED = '''
def batch_norm(input, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """A tuple of dims, unbiased=False, the unbiased variance computed separately, slice
    assignment, and the affine transform folded into one scale and shift."""
    dims = tuple(d for d in range(input.dim()) if d != 1)
    if training:
        mean = input.mean(dim=dims)
        var = input.var(dim=dims, unbiased=False)
        with torch.no_grad():
            if running_mean is not None:
                running_mean[:] = (1 - momentum) * running_mean + momentum * mean
            if running_var is not None:
                running_var.mul_(1 - momentum).add_(input.var(dim=dims, unbiased=True), alpha=momentum)
    else:
        mean, var = running_mean, running_var
    scale = 1 / (var + eps).sqrt()
    if weight is not None:
        scale = scale * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    view = [-1 if d == 1 else 1 for d in range(input.dim())]
    return input * scale.reshape(view) + shift.reshape(view)
'''

BATCH_NORM_CHANNELS_LAST = '''
def batch_norm(input, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """Channels moved last and flattened to (m, C); the variance written out; copy_."""
    C = input.shape[1]
    moved = input.movedim(1, -1)
    x = moved.reshape(-1, C)                                # (m, C)
    if training:
        m = x.shape[0]
        mean = x.mean(dim=0)
        var = ((x - mean) ** 2).sum(dim=0) / m
        if running_mean is not None:
            running_mean.copy_((1 - momentum) * running_mean + momentum * mean.detach())
        if running_var is not None:
            running_var.copy_((1 - momentum) * running_var + momentum * var.detach() * m / (m - 1))
    else:
        mean, var = running_mean, running_var
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y.reshape(moved.shape).movedim(-1, 1)
'''

BATCH_NORM_ONE_PASS = '''
def batch_norm(input, running_mean, running_var, weight=None, bias=None,
               training=False, momentum=0.1, eps=1e-5):
    """The variance in one pass, mean(x**2) - mean(x)**2, in the input's dtype: right on paper,
    a few digits short in float32 when a channel's mean is large compared with its spread."""
    dims = [0] + list(range(2, input.dim()))
    shape = [1, input.shape[1]] + [1] * (input.dim() - 2)
    if training:
        m = input.numel() // input.shape[1]
        mean = input.sum(dim=dims) / m
        var = (input * input).sum(dim=dims) / m - mean * mean
        with torch.no_grad():
            if running_mean is not None:
                running_mean.mul_(1 - momentum).add_(momentum * mean)
            if running_var is not None:
                running_var.mul_(1 - momentum).add_(momentum * var * m / (m - 1))
    else:
        mean, var = running_mean, running_var
    out = (input - mean.view(shape)) / torch.sqrt(var.view(shape) + eps)
    if weight is not None:
        out = out * weight.view(shape)
    if bias is not None:
        out = out + bias.view(shape)
    return out
'''

BACKWARD_ONE_PASS_CHAIN_RULE = '''
def batch_norm_backward(grad_output, input, weight=None, eps=1e-5):
    """The chain rule step by step in the input's dtype, the variance in one pass."""
    x, g = input, grad_output
    dims = [0] + list(range(2, x.dim()))
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    m = x.numel() // x.shape[1]
    mean = x.mean(dim=dims, keepdim=True)
    xmu = x - mean
    var = (x ** 2).mean(dim=dims, keepdim=True) - mean ** 2
    istd = 1 / torch.sqrt(var + eps)
    dx_hat = g if weight is None else g * weight.view(shape)
    dvar = (dx_hat * xmu).sum(dim=dims, keepdim=True) * -0.5 * istd ** 3
    dmean = -(dx_hat * istd).sum(dim=dims, keepdim=True) + dvar * (-2 * xmu).mean(dim=dims, keepdim=True)
    dx = dx_hat * istd + dvar * 2 * xmu / m + dmean / m
    if weight is None:
        return dx, None, None
    return dx, (g * xmu * istd).sum(dim=dims), g.sum(dim=dims)
'''

BACKWARD_CHAIN_RULE_FLOAT64 = '''
def batch_norm_backward(grad_output, input, weight=None, eps=1e-5):
    """The chain rule step by step (through x_hat, var and mean), in float64, cast back."""
    x, g = input.double(), grad_output.double()
    dims = [0] + list(range(2, x.dim()))
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    m = x.numel() // x.shape[1]
    xmu = x - x.mean(dim=dims, keepdim=True)
    var = (xmu ** 2).mean(dim=dims, keepdim=True)
    istd = 1 / torch.sqrt(var + eps)
    x_hat = xmu * istd
    dx_hat = g if weight is None else g * weight.double().view(shape)
    dvar = (dx_hat * xmu).sum(dim=dims, keepdim=True) * -0.5 * istd ** 3
    dmean = -(dx_hat * istd).sum(dim=dims, keepdim=True) + dvar * (-2 * xmu).mean(dim=dims, keepdim=True)
    dx = dx_hat * istd + dvar * 2 * xmu / m + dmean / m
    if weight is None:
        return dx.to(input.dtype), None, None
    return dx.to(input.dtype), (g * x_hat).sum(dim=dims).to(input.dtype), g.sum(dim=dims).to(input.dtype)
'''

BACKWARD_MEANS = '''
def batch_norm_backward(grad_output, input, weight=None, eps=1e-5):
    """Means instead of sums, var_mean and rsqrt, gamma folded into the factor."""
    dims = tuple(d for d in range(input.dim()) if d != 1)
    view = [-1 if d == 1 else 1 for d in range(input.dim())]
    var, mean = torch.var_mean(input, dim=dims, correction=0, keepdim=True)
    inv_std = torch.rsqrt(var + eps)
    x_hat = (input - mean) * inv_std
    factor = inv_std if weight is None else weight.reshape(view) * inv_std
    grad_input = factor * (grad_output - grad_output.mean(dim=dims, keepdim=True)
                           - x_hat * (grad_output * x_hat).mean(dim=dims, keepdim=True))
    if weight is None:
        return grad_input, None, None
    return grad_input, (grad_output * x_hat).sum(dim=dims), grad_output.sum(dim=dims)
'''

BACKWARD_RESHAPED = '''
def batch_norm_backward(grad_output, input, weight=None, eps=1e-5):
    """On a (C, m) view, the formula of the chapter, reshaped back."""
    C = input.shape[1]
    x = input.transpose(0, 1).reshape(C, -1)               # (C, m)
    g = grad_output.transpose(0, 1).reshape(C, -1)
    m = x.shape[1]
    mean = x.mean(dim=1, keepdim=True)
    var = x.var(dim=1, unbiased=False, keepdim=True)
    x_hat = (x - mean) / torch.sqrt(var + eps)
    dx_hat = g if weight is None else g * weight[:, None]
    dx = (m * dx_hat - dx_hat.sum(dim=1, keepdim=True)
          - x_hat * (dx_hat * x_hat).sum(dim=1, keepdim=True)) / (m * torch.sqrt(var + eps))
    grad_input = dx.reshape(C, input.shape[0], *input.shape[2:]).transpose(0, 1)
    if weight is None:
        return grad_input, None, None
    return grad_input, (g * x_hat).sum(dim=1), g.sum(dim=1)
'''

LAYER_NORM_FLOAT64 = '''
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """float64 inside, cast back; var_mean over a tuple of negative dims; rsqrt."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    dims = tuple(range(-len(normalized_shape), 0))
    x = input.double()
    var, mean = torch.var_mean(x, dim=dims, correction=0, keepdim=True)
    out = (x - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        out = out * weight.double()
    if bias is not None:
        out = out + bias.double()
    return out.to(input.dtype)
'''

LAYER_NORM_FLATTENED = '''
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The trailing dimensions flattened into one, unbiased=False, reshaped back."""
    k = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    x = input.reshape(*input.shape[:input.dim() - k], -1)
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, unbiased=False, keepdim=True)
    out = ((x - mean) / (var + eps).sqrt()).reshape(input.shape)
    if weight is not None:
        out = weight * out
    if bias is not None:
        out = bias + out
    return out
'''

INSTANCE_NORM_FLOAT64 = '''
def instance_norm(input, weight=None, bias=None, eps=1e-5):
    """(N, C, positions) in float64, var_mean, rsqrt, cast back."""
    N, C = input.shape[:2]
    x = input.double().reshape(N, C, -1)
    var, mean = torch.var_mean(x, dim=2, correction=0, keepdim=True)
    out = ((x - mean) * torch.rsqrt(var + eps)).reshape(input.shape)
    view = (1, C) + (1,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight.double().reshape(view)
    if bias is not None:
        out = out + bias.double().reshape(view)
    return out.to(input.dtype)
'''

INSTANCE_NORM_TUPLE = '''
def instance_norm(input, weight=None, bias=None, eps=1e-5):
    """A tuple of position dims, the variance written out, indexing with None."""
    dims = tuple(range(2, input.dim()))
    mean = input.mean(dim=dims, keepdim=True)
    var = ((input - mean) ** 2).mean(dim=dims, keepdim=True)
    out = (input - mean) / torch.sqrt(var + eps)
    index = (None, slice(None)) + (None,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight[index]
    if bias is not None:
        out = out + bias[index]
    return out
'''

GROUP_NORM_FLOAT64 = '''
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """(N, G, C//G, *positions) in float64, var_mean over every dim after the group, rsqrt."""
    N, C = input.shape[:2]
    if C % num_groups:
        raise ValueError(f"num_channels ({C}) must be divisible by num_groups ({num_groups})")
    x = input.double().reshape(N, num_groups, C // num_groups, *input.shape[2:])
    dims = tuple(range(2, x.dim()))
    var, mean = torch.var_mean(x, dim=dims, unbiased=False, keepdim=True)
    out = ((x - mean) * torch.rsqrt(var + eps)).reshape(input.shape)
    view = (1, C) + (1,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight.double().reshape(view)
    if bias is not None:
        out = out + bias.double().reshape(view)
    return out.to(input.dtype)
'''

GROUP_NORM_ROWS = '''
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """One row per (example, group), unbiased=False, affine via a (1, C, 1, ...) view."""
    N, C = input.shape[0], input.shape[1]
    if C % num_groups != 0:
        raise ValueError(f"cannot split num_channels ({C}) into num_groups ({num_groups}) equal groups")
    rows = input.reshape(N * num_groups, -1)
    mean = rows.mean(dim=1, keepdim=True)
    var = rows.var(dim=1, unbiased=False, keepdim=True)
    out = ((rows - mean) / torch.sqrt(var + eps)).view_as(input)
    view = [1, C] + [1] * (input.dim() - 2)
    if weight is not None:
        out = out * weight.view(view)
    if bias is not None:
        out = out + bias.view(view)
    return out
'''

LAYER_NORM_ONE_PASS = '''
def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """The variance in one pass, mean(x**2) - mean(x)**2, in the input's dtype: right on paper,
    a few digits short in float32 when an example's mean is large compared with its spread."""
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    dims = [input.dim() - 1 - i for i in range(len(normalized_shape))]
    mean = input.mean(dim=dims, keepdim=True)
    var = (input * input).mean(dim=dims, keepdim=True) - mean * mean
    out = (input - mean) / torch.sqrt(var + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out
'''

INSTANCE_NORM_ONE_PASS = '''
def instance_norm(input, weight=None, bias=None, eps=1e-5):
    """Sums over a (N, C, positions) view, the variance in one pass, in the input's dtype."""
    N, C = input.shape[:2]
    x = input.reshape(N, C, -1)
    m = x.shape[2]
    mean = x.sum(dim=2, keepdim=True) / m
    var = (x ** 2).sum(dim=2, keepdim=True) / m - mean ** 2
    out = ((x - mean) / torch.sqrt(var + eps)).reshape(input.shape)
    view = (1, C) + (1,) * (input.dim() - 2)
    if weight is not None:
        out = out * weight.reshape(view)
    if bias is not None:
        out = out + bias.reshape(view)
    return out
'''

GROUP_NORM_ONE_PASS = '''
def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """The variance in one pass per (example, group), E[x**2] - E[x]**2, in the input's dtype."""
    N, C = input.shape[:2]
    if C % num_groups != 0:
        raise ValueError(f"num_channels ({C}) must be divisible by num_groups ({num_groups})")
    x = input.reshape(N, num_groups, -1)
    mean = x.mean(dim=-1, keepdim=True)
    var = x.pow(2).mean(dim=-1, keepdim=True) - mean.pow(2)
    out = ((x - mean) / torch.sqrt(var + eps)).reshape(input.shape)
    view = [1, C] + [1] * (input.dim() - 2)
    if weight is not None:
        out = out * weight.view(view)
    if bias is not None:
        out = out + bias.view(view)
    return out
'''

DROPOUT_BERNOULLI = '''
def dropout(input, p=0.5, training=True, generator=None):
    """The mask from bernoulli_ on a tensor like the input, the scale as a factor."""
    if p < 0 or p > 1:
        raise ValueError(f"p must be a probability in [0, 1], got {p}")
    if not training or p == 0:
        return input
    if p == 1:
        return torch.zeros_like(input)
    mask = torch.empty_like(input).bernoulli_(1 - p, generator=generator)
    return input * mask * (1.0 / (1 - p))
'''

DROPOUT_WHERE = '''
def dropout(input, p=0.5, training=True, generator=None):
    """rand(...) < 1 - p (a float32 draw, a boolean mask) and torch.where."""
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training:
        return input
    keep = torch.rand(input.shape, generator=generator, device=input.device) < 1 - p
    return torch.where(keep, input / (1 - p), torch.zeros_like(input))
'''

DROPOUT_BERNOULLI_FN = '''
def dropout(input, p=0.5, training=True, generator=None):
    """torch.bernoulli of a tensor of keep probabilities, masked_fill."""
    if not 0 <= p <= 1:
        raise ValueError(f"invalid dropout probability p={p}")
    if not training or p == 0:
        return input
    if p == 1:
        return input * 0.0
    keep = torch.bernoulli(torch.full_like(input, 1 - p), generator=generator).bool()
    return input.masked_fill(~keep, 0) / (1 - p)
'''

FANS_PYTORCH = '''
def calculate_fan_in_and_fan_out(tensor):
    """torch.nn.init's way: the size of one kernel from tensor[0][0]."""
    if tensor.dim() < 2:
        raise ValueError(f"fans need a tensor with at least 2 dimensions, got shape {list(tensor.shape)}")
    receptive_field = tensor[0][0].numel() if tensor.dim() > 2 else 1
    return tensor.size(1) * receptive_field, tensor.size(0) * receptive_field
'''

XAVIER_UNIFORM_COPY = '''
@torch.no_grad()
def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Decorated with no_grad; U[-b, b] from torch.rand, copied in."""
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    bound = gain * math.sqrt(6 / (fan_in + fan_out))
    u = torch.rand(tensor.shape, generator=generator, dtype=tensor.dtype, device=tensor.device)
    tensor.copy_((2 * u - 1) * bound)
    return tensor
'''

XAVIER_NORMAL_COPY = '''
@torch.no_grad()
def xavier_normal_(tensor, gain=1.0, generator=None):
    fan_in, fan_out = calculate_fan_in_and_fan_out(tensor)
    std = gain * (2 / (fan_in + fan_out)) ** 0.5
    tensor.copy_(std * torch.randn(tensor.shape, generator=generator, dtype=tensor.dtype, device=tensor.device))
    return tensor
'''

KAIMING_UNIFORM_SCALED = '''
def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    return calculate_fan_in_and_fan_out(tensor)[0 if mode == "fan_in" else 1]


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U[-1, 1] scaled by the bound, in place."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    with torch.no_grad():
        tensor.uniform_(-1, 1, generator=generator).mul_(bound)
    return tensor
'''

KAIMING_NORMAL_SCALED = '''
def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, 1) scaled by the standard deviation, in place."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    with torch.no_grad():
        tensor.normal_(generator=generator).mul_(std)
    return tensor
'''

LAYER_STDS_HOOKS = '''
def layer_stds(model, x):
    """Forward hooks on the activation layers, removed afterwards."""
    stds, handles = [], []

    def record(module, inputs, output):
        stds.append(output.std(unbiased=False))

    for layer in model.modules():
        if isinstance(layer, ACTIVATIONS):
            handles.append(layer.register_forward_hook(record))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    return torch.stack(stds)
'''

LAYER_STDS_FLOATS = '''
def layer_stds(model, x):
    """inference_mode, the std as sqrt(var) in float64, a tensor made from Python floats."""
    stds = []
    with torch.inference_mode():
        for layer in model:
            x = layer(x)
            if isinstance(layer, ACTIVATIONS):
                stds.append(x.double().var(correction=0).sqrt().item())
    return torch.tensor(stds)
'''

ICS_FUNCTIONAL = '''
def internal_covariate_shift(model, loss_fn, x, y, lr):
    """torch.func.functional_call on parameters and *cloned* buffers: the model is never touched."""
    from torch.func import functional_call
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    params = [p for _, p in named]
    grads = torch.autograd.grad(loss_fn(functional_call(model, ({n: p for n, p in named}, buffers), (x,)), y), params)
    l2, cosine = [], []
    for layer in (m for m in model.modules() if isinstance(m, nn.Linear)):
        i = [id(p) for p in params].index(id(layer.weight))
        moved = {n: (p - lr * g).detach() if j < i else p for j, ((n, p), g) in enumerate(zip(named, grads))}
        out = functional_call(model, (moved, {n: b.clone() for n, b in model.named_buffers()}), (x,))
        g_new = torch.autograd.grad(loss_fn(out, y), [layer.weight])[0]
        l2.append(torch.linalg.vector_norm(grads[i] - g_new))
        cosine.append(F.cosine_similarity(grads[i].flatten(), g_new.flatten(), dim=0))
    return torch.stack(l2), torch.stack(cosine)
'''

ICS_BACKWARD_COPY = '''
def internal_covariate_shift(model, loss_fn, x, y, lr):
    """loss.backward() and .grad on deep copies of the model; Python floats out."""
    def weight_grads(net):
        net.zero_grad()
        loss_fn(net(x), y).backward()
        return [m.weight.grad.clone() for m in net.modules() if isinstance(m, nn.Linear)]

    base = copy.deepcopy(model)
    params = [p for p in base.parameters() if p.requires_grad]
    base.zero_grad()
    loss_fn(base(x), y).backward()
    steps = [p.grad.clone() for p in params]
    before = weight_grads(copy.deepcopy(model))
    weights = [m.weight for m in base.modules() if isinstance(m, nn.Linear)]
    l2, cosine = [], []
    for k, w in enumerate(weights):
        i = next(j for j, p in enumerate(params) if p is w)
        moved = copy.deepcopy(model)
        with torch.no_grad():
            for j, p in enumerate(q for q in moved.parameters() if q.requires_grad):
                if j < i:
                    p -= lr * steps[j]
        after = weight_grads(moved)[k]
        g = before[k]
        l2.append((g - after).norm().item())
        cosine.append(((g * after).sum() / (g.norm() * after.norm())).item())
    return torch.tensor(l2, dtype=torch.float64), torch.tensor(cosine, dtype=torch.float64)
'''

ICS_MANUAL_RESTORE = '''
def internal_covariate_shift(model, loss_fn, x, y, lr):
    """Parameters and BatchNorm running statistics saved and restored by hand (not the
    num_batches_tracked counters, which change nothing the model computes)."""
    params = [p for p in model.parameters() if p.requires_grad]
    saved = [p.detach().clone() for p in params]
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    stats = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    grads = torch.autograd.grad(loss_fn(model(x), y), params)
    l2, cosine = [], []
    for layer in [m for m in model.modules() if isinstance(m, nn.Linear)]:
        i = next(j for j, p in enumerate(params) if p is layer.weight)
        with torch.no_grad():
            for j, p in enumerate(params):
                p.copy_(saved[j] - lr * grads[j] if j < i else saved[j])
        g_new = torch.autograd.grad(loss_fn(model(x), y), [layer.weight])[0]
        l2.append((grads[i] - g_new).norm())
        cosine.append(F.cosine_similarity(grads[i].flatten(), g_new.flatten(), dim=0))
    with torch.no_grad():
        for p, w in zip(params, saved):
            p.copy_(w)
        for m, (rm, rv) in zip(bns, stats):
            m.running_mean.copy_(rm)
            m.running_var.copy_(rv)
    return torch.stack(l2), torch.stack(cosine)
'''

PROBE_VECTOR = '''
def landscape_probe(model, loss_fn, x, y, step_sizes):
    """parameters_to_vector / vector_to_parameters on a deep copy; losses as float32 floats."""
    from torch.nn.utils import parameters_to_vector, vector_to_parameters
    probe = copy.deepcopy(model)
    params = [p for p in probe.parameters() if p.requires_grad]

    def flat_grad():
        return parameters_to_vector(torch.autograd.grad(loss_fn(probe(x), y), params))

    w0 = parameters_to_vector(params).detach().clone()
    g0 = flat_grad()
    losses, changes = [], []
    for eta in step_sizes:
        vector_to_parameters(w0 - eta * g0, params)
        losses.append(loss_fn(probe(x), y).item())
        changes.append(torch.linalg.norm(flat_grad() - g0))
    changes = torch.stack(changes)
    beta = max(float(c) / (eta * g0.norm().item()) for c, eta in zip(changes, step_sizes))
    return torch.tensor(losses), changes.detach(), beta
'''

PROBE_FUNCTIONAL = '''
def landscape_probe(model, loss_fn, x, y, step_sizes):
    """torch.func: functional_call and grad, buffers cloned; beta returned as a 0-d tensor."""
    from torch.func import functional_call, grad
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    w = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}

    def loss_at(params):
        buffers = {n: b.clone() for n, b in model.named_buffers()}
        return loss_fn(functional_call(model, (params, buffers), (x,)), y)

    g = grad(loss_at)(w)
    g0 = torch.cat([g[n].reshape(-1) for n in names])
    losses, changes = [], []
    for eta in step_sizes:
        moved = {n: w[n] - eta * g[n] for n in names}
        losses.append(loss_at(moved).detach())
        g_eta = grad(loss_at)(moved)
        changes.append(torch.cat([g_eta[n].reshape(-1) for n in names]).sub(g0).norm())
    changes = torch.stack(changes)
    beta = (changes / (torch.tensor(step_sizes, dtype=changes.dtype) * g0.norm())).max()
    return torch.stack(losses), changes, beta
'''

GP_TRIANGULAR = '''
def gp_posterior(X, y, X_star, lengthscale=1.0, variance=1.0, noise=1e-6):
    """torch.cdist on inputs divided by the lengthscale, two triangular solves for alpha,
    torch.einsum for the squared norms, torch.maximum against 0."""
    def kernel(A, B):
        return variance * torch.exp(-0.5 * torch.cdist(A / lengthscale, B / lengthscale) ** 2)

    n = X.shape[0]
    K = kernel(X, X)
    K = K + torch.diag(torch.full((n,), noise, dtype=X.dtype))
    L = torch.linalg.cholesky(K)
    a = torch.linalg.solve_triangular(L, y.reshape(n, 1), upper=False)
    alpha = torch.linalg.solve_triangular(L.mT, a, upper=True).reshape(n)
    K_star = kernel(X, X_star)
    v = torch.linalg.solve_triangular(L, K_star, upper=False)
    mean = torch.einsum("nm,n->m", K_star, alpha)
    var = variance - torch.einsum("nm,nm->m", v, v)
    return mean, torch.maximum(var, torch.zeros_like(var))
'''

GP_EXPANDED = '''
def gp_posterior(X, y, X_star, lengthscale=1.0, variance=1.0, noise=1e-6):
    """float64 inside and cast back; squared distances as |a|^2 + |b|^2 - 2 a.b; cholesky_ex;
    the variance as the diagonal of the full posterior covariance."""
    dtype = X.dtype
    X, y, X_star = X.double(), y.double(), X_star.double()

    def sq_dist(A, B):
        d2 = (A * A).sum(1).unsqueeze(1) + (B * B).sum(1).unsqueeze(0) - 2.0 * A @ B.T
        return d2.clamp_min(0.0)

    K = variance * torch.exp(-sq_dist(X, X) / (2.0 * lengthscale * lengthscale))
    K.diagonal().add_(noise)
    L, info = torch.linalg.cholesky_ex(K)
    K_s = variance * torch.exp(-sq_dist(X, X_star) / (2.0 * lengthscale * lengthscale))
    mean = K_s.T @ torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1)
    v = torch.linalg.solve_triangular(L, K_s, upper=False)
    cov = variance * torch.exp(-sq_dist(X_star, X_star) / (2.0 * lengthscale * lengthscale)) - v.T @ v
    var = torch.diagonal(cov).clamp_min(0.0)
    return mean.to(dtype), var.to(dtype)
'''

GP_LINALG_SOLVE = '''
def gp_posterior(X, y, X_star, lengthscale=1.0, variance=1.0, noise=1e-6):
    """torch.linalg.solve (an LU factorization) instead of Cholesky: also never an inverse;
    torch.relu for the clamp; the kernel as a product over the dimensions."""
    def k(A, B):
        diff = A.unsqueeze(1) - B.unsqueeze(0)                   # (len(A), len(B), d)
        return variance * torch.prod(torch.exp(-diff ** 2 / (2 * lengthscale ** 2)), dim=-1)

    K = k(X, X) + noise * torch.eye(X.shape[0], dtype=X.dtype)
    K_star = k(X, X_star)
    mean = K_star.T @ torch.linalg.solve(K, y)
    W = torch.linalg.solve(K, K_star)                            # K^-1 k_*, column by column
    var = torch.relu(variance - (K_star * W).sum(dim=0))
    return mean, var
'''

EI_NORMAL = '''
def expected_improvement(mean, std, best, xi=0.0):
    """torch.distributions.Normal for Phi and phi; std floored at 1e-12 instead of a separate
    case for std = 0 (z is then 0 or huge, and Phi(z) 1/2, 1 or 0)."""
    normal = torch.distributions.Normal(torch.zeros((), dtype=mean.dtype), torch.ones((), dtype=mean.dtype))
    improvement = best - mean - xi
    sigma = std.clamp_min(1e-12)
    z = improvement / sigma
    return improvement * normal.cdf(z) + sigma * normal.log_prob(z).exp()
'''

EI_MASKED = '''
def expected_improvement(mean, std, best, xi=0.0):
    """torch.special.ndtr; the two cases written into a zero tensor by boolean indexing."""
    imp = best - mean - xi
    ei = torch.zeros_like(imp)
    pos = std > 0
    z = imp[pos] / std[pos]
    pdf = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    ei[pos] = imp[pos] * torch.special.ndtr(z) + std[pos] * pdf
    ei[~pos] = torch.clamp(imp[~pos], min=0)
    return ei
'''

EI_ERFC = '''
def expected_improvement(mean, std, best, xi=0.0):
    """erfc for Phi (accurate in the far left tail); z computed as 0 where std is 0, and the
    formula written as std * (z * Phi(z) + phi(z))."""
    improvement = best - mean - xi
    zero = std == 0
    z = torch.where(zero, torch.zeros_like(improvement), improvement / torch.where(zero, 1.0, std))
    Phi = 0.5 * torch.erfc(-z / math.sqrt(2.0))
    phi = torch.exp(-0.5 * z * z) * (1.0 / math.sqrt(2.0 * math.pi))
    return torch.where(zero, torch.clamp(improvement, min=0.0), std * (z * Phi + phi))
'''


STYLES = [
    ("batchnorm", "float64-var_mean-rsqrt-lerp", {"batch_norm": BATCH_NORM_FLOAT64}),
    ("batchnorm", "tuple-dims-unbiased-False-fused-scale-shift", {"batch_norm": BATCH_NORM_FUSED}),
    ("batchnorm", "channels-last-reshape-copy_", {"batch_norm": BATCH_NORM_CHANNELS_LAST}),
    ("batchnorm", "one-pass-variance-float32", {"batch_norm": BATCH_NORM_ONE_PASS}),
    ("batchnorm", "backward-chain-rule-float64", {"batch_norm_backward": BACKWARD_CHAIN_RULE_FLOAT64}),
    ("batchnorm", "backward-chain-rule-one-pass-float32", {"batch_norm_backward": BACKWARD_ONE_PASS_CHAIN_RULE}),
    ("batchnorm", "backward-means-var_mean-rsqrt", {"batch_norm_backward": BACKWARD_MEANS}),
    ("batchnorm", "backward-on-C-by-m-view", {"batch_norm_backward": BACKWARD_RESHAPED}),
    ("normalization", "layer_norm-float64-var_mean-rsqrt", {"layer_norm": LAYER_NORM_FLOAT64}),
    ("normalization", "layer_norm-flattened-unbiased-False", {"layer_norm": LAYER_NORM_FLATTENED}),
    ("normalization", "instance_norm-float64-reshape", {"instance_norm": INSTANCE_NORM_FLOAT64}),
    ("normalization", "instance_norm-tuple-dims-indexing", {"instance_norm": INSTANCE_NORM_TUPLE}),
    ("normalization", "group_norm-float64-5d-view", {"group_norm": GROUP_NORM_FLOAT64}),
    ("normalization", "group_norm-rows-unbiased-False", {"group_norm": GROUP_NORM_ROWS}),
    ("normalization", "layer_norm-one-pass-variance-float32", {"layer_norm": LAYER_NORM_ONE_PASS}),
    ("normalization", "instance_norm-one-pass-variance-float32", {"instance_norm": INSTANCE_NORM_ONE_PASS}),
    ("normalization", "group_norm-one-pass-variance-float32", {"group_norm": GROUP_NORM_ONE_PASS}),
    ("dropout", "bernoulli_-scale-factor", {"dropout": DROPOUT_BERNOULLI}),
    ("dropout", "rand-less-than-keep-where", {"dropout": DROPOUT_WHERE}),
    ("dropout", "torch.bernoulli-masked_fill", {"dropout": DROPOUT_BERNOULLI_FN}),
    ("initialization", "fans-pytorch-way", {"fans": FANS_PYTORCH}),
    ("initialization", "xavier-no_grad-decorator-rand-randn-copy_",
     {"xavier_uniform_": XAVIER_UNIFORM_COPY, "xavier_normal_": XAVIER_NORMAL_COPY}),
    ("initialization", "kaiming-unit-draw-scaled-own-mode-check",
     {"kaiming_uniform_": KAIMING_UNIFORM_SCALED, "kaiming_normal_": KAIMING_NORMAL_SCALED}),
    ("initialization", "layer_stds-forward-hooks", {"layer_stds": LAYER_STDS_HOOKS}),
    ("initialization", "layer_stds-inference_mode-python-floats", {"layer_stds": LAYER_STDS_FLOATS}),
    ("smoothness", "ics-functional_call-cloned-buffers", {"internal_covariate_shift": ICS_FUNCTIONAL}),
    ("smoothness", "ics-backward-on-deep-copies", {"internal_covariate_shift": ICS_BACKWARD_COPY}),
    ("smoothness", "ics-manual-restore-of-parameters-and-running-stats", {"internal_covariate_shift": ICS_MANUAL_RESTORE}),
    ("smoothness", "probe-parameters_to_vector-float32-losses", {"landscape_probe": PROBE_VECTOR}),
    ("smoothness", "probe-torch.func-tensor-beta", {"landscape_probe": PROBE_FUNCTIONAL}),
    ("tuning", "gp-cdist-two-solve_triangular-einsum", {"gp_posterior": GP_TRIANGULAR}),
    ("tuning", "gp-float64-inside-expanded-distances-full-covariance", {"gp_posterior": GP_EXPANDED}),
    ("tuning", "gp-torch.linalg.solve-relu", {"gp_posterior": GP_LINALG_SOLVE}),
    ("tuning", "ei-torch.distributions.Normal-floored-std", {"expected_improvement": EI_NORMAL}),
    ("tuning", "ei-ndtr-boolean-indexing", {"expected_improvement": EI_MASKED}),
    ("tuning", "ei-erfc-std-times-z-Phi-plus-phi", {"expected_improvement": EI_ERFC}),
]


@pytest.mark.parametrize("assignment, style, answers", STYLES, ids=[f"{a}-{s}" for a, s, _ in STYLES])
def test_a_correct_answer_in_another_style_scores_every_point(assignment, style, answers):
    """Every autograded cell, visible and hidden (a changed function is also used by others:
    the fans by the initializers), scores its full points."""
    namespace = student_namespace(assignment, answers, style)
    for grade_id, source, points in graded_cells(assignment):
        got = run_cell(source, namespace, f"<{style}: test cell {grade_id}>")
        assert got == points, f"{style}: cell {grade_id} scored {got!r} of {points}"


def with_seed(source: str, seed: int) -> str:
    """A test cell's source with its checks called with another seed."""
    source = re.sub(r"\bseed=\d+", f"seed={seed}", source)
    return re.sub(r"\b(check_\w+)\((\w+), points=", rf"\1(\2, seed={seed}, points=", source)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("assignment, style, answers", STYLES, ids=[f"{a}-{s}" for a, s, _ in STYLES])
def test_the_verdict_does_not_hang_on_the_seeds_of_the_notebook(assignment, style, answers, seed):
    """The same, with other seeds: a correct answer passes on any data, not by luck on the
    data of the seeds that the notebook happens to use. (Checks without a seed, such as
    check_fans, are the same on every run.)"""
    namespace = student_namespace(assignment, answers, style)
    for grade_id, source, points in graded_cells(assignment):
        if "seed" not in inspect.signature(namespace_check(source, namespace)).parameters:
            continue
        got = run_cell(with_seed(source, seed), namespace, f"<{style}: test cell {grade_id}, seed {seed}>")
        assert got == points, f"{style}: cell {grade_id} with seed {seed} scored {got!r} of {points}"


def namespace_check(source: str, namespace: dict):
    """The first check function a test cell calls."""
    run_cell("\n".join(line for line in source.splitlines() if line.startswith("from coursekit")), namespace,
          "<imports of a test cell>")
    return namespace[re.search(r"\b(check_\w+)\(", source).group(1)]


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_table_answers_every_cell_and_hidden_tests_exist(assignment):
    """Each answer cell of each assignment has at least one other style in the table, and
    the assignment has hidden tests for the table to pass."""
    answered = {cell for a, _, answers in STYLES if a == assignment for cell in answers}
    assert set(answer_cells(assignment)) <= answered, set(answer_cells(assignment)) - answered
    assert any("### BEGIN HIDDEN TESTS" in source for _, source, _ in graded_cells(assignment))


@pytest.mark.parametrize("assignment", ASSIGNMENTS)
def test_the_solution_itself_scores_every_point(assignment):
    namespace = student_namespace(assignment, {}, f"{assignment}-solution")
    for grade_id, source, points in graded_cells(assignment):
        assert run_cell(source, namespace, f"<solution: test cell {grade_id}>") == points, grade_id
