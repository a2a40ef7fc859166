"""A CPU stand-in for a CUDA device that fails on a device mismatch as CUDA does.

Inside ``fake_cuda()``, a tensor made on, or moved to, ``cuda:0`` is a ``FakeCudaTensor``:
its ``device`` is ``cuda:0``, and it computes on the CPU. Every operation checks its tensor
arguments the way CUDA kernels do: a CUDA tensor beside a CPU tensor (other than a 0-dim
scalar, and other than the index of an indexing op) raises "Expected all tensors to be on the
same device". So code that would mix devices on a GPU fails here, on a machine without one,
while data-dependent code (``float(x)``, ``torch.unique``, ``nonzero``) still runs, which
``FakeTensorMode`` and the ``meta`` device cannot do.

Limits: autograd on fake CUDA tensors reaches for a CUDA stream and aborts the process, so the
forward and backward passes of a training step are out of reach (``tests/test_cuda.py`` runs
them on a real GPU), and so is any op on a tensor that requires grad outside ``no_grad``
(``detach()`` first); optimizer steps, no-grad code and module moves work. Name the device with its
index (``torch.device("cuda", 0)``): a bare ``"cuda"`` asks the driver for the current device.
"""

from __future__ import annotations

import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

CUDA = torch.device("cuda", 0)

# CUDA kernels accept CPU index tensors for these
_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default,
             torch.ops.aten._index_put_impl_.default}
_COPIES = {torch.ops.aten._to_copy.default, torch.ops.aten.copy_.default}


class DeviceMismatch(RuntimeError):
    pass


class FakeCudaTensor(torch.Tensor):
    @staticmethod
    def __new__(cls, inner: torch.Tensor):
        t = torch.Tensor._make_wrapper_subclass(cls, inner.shape, strides=inner.stride(), storage_offset=inner.storage_offset(),
                                                dtype=inner.dtype, layout=inner.layout, device=CUDA,
                                                requires_grad=inner.requires_grad)
        t._inner = inner
        return t

    # traceable wrapper subclass: Module.to swaps parameters in place (the same Parameter objects)
    def __tensor_flatten__(self):
        return ["_inner"], None

    @staticmethod
    def __tensor_unflatten__(inner, meta, size, stride):
        return FakeCudaTensor(inner["_inner"])

    # Python's scalar conversions enter C++ under a CUDA device guard: answer them here
    def item(self):
        return self._inner.item()

    def tolist(self):
        return self._inner.tolist()

    def __float__(self):
        return float(self._inner)

    def __int__(self):
        return int(self._inner)

    def __bool__(self):
        return bool(self._inner)

    def __index__(self):
        return self._inner.__index__()

    def __invert__(self):
        return torch.bitwise_not(self)

    # indexing from Python enters under a device guard too: index the CPU tensor inside
    def __getitem__(self, index):
        return FakeCudaTensor(self._inner[_inner_index(index)])

    def __setitem__(self, index, value):
        if isinstance(value, torch.Tensor) and not isinstance(value, FakeCudaTensor) and value.dim() > 0:
            raise DeviceMismatch("index_put_: values on cpu for a tensor on cuda:0")
        self._inner[_inner_index(index)] = value._inner if isinstance(value, FakeCudaTensor) else value

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.")

    def __reduce_ex__(self, protocol):  # saved as the CPU tensor a torch.load(map_location="cpu") would give
        return self._inner.__reduce_ex__(protocol)

    def __repr__(self):
        return f"FakeCuda({self._inner!r})"

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _GUARDED:  # their bindings take a CUDA device guard before dispatching
            inner = tree_map(lambda x: x._inner if isinstance(x, FakeCudaTensor) else x, (tuple(args), kwargs))
            out = func(*inner[0], **inner[1])
            if func.__name__.endswith("_"):  # in place: the tensor itself
                return args[0]
            return tree_map(lambda x: FakeCudaTensor(x) if isinstance(x, torch.Tensor) else x, out)
        with torch._C.DisableTorchFunctionSubclass():
            return func(*args, **kwargs)


_GUARDED = {torch.nonzero, torch.Tensor.nonzero, torch.argwhere, torch.Tensor.argwhere, torch.Tensor.copy_}


def _inner_index(index):
    if isinstance(index, tuple):
        return tuple(_inner_index(i) for i in index)
    return index._inner if isinstance(index, FakeCudaTensor) else index


def _dispatch(func, args, kwargs):
    devices, wrappers = set(), {}

    def unwrap(x):
        if isinstance(x, FakeCudaTensor):
            devices.add("cuda")
            wrappers[id(x._inner)] = x
            return x._inner
        if isinstance(x, torch.Tensor) and not (x.dim() == 0 and x.device.type == "cpu"):
            devices.add(x.device.type)
        return x

    if func in _INDEXING:  # only the indexed tensor's device counts
        inner_args = (unwrap(args[0]), *tree_map(lambda x: x._inner if isinstance(x, FakeCudaTensor) else x, args[1:]))
        inner_kwargs = kwargs
    else:
        inner_args, inner_kwargs = tree_map(unwrap, (tuple(args), dict(kwargs)))
    target = inner_kwargs.get("device")
    to_cuda = target is not None and torch.device(target).type == "cuda"
    if to_cuda:
        inner_kwargs["device"] = torch.device("cpu")
    if func in _COPIES:  # a copy between devices is what they are for
        devices = {"cuda"} if isinstance(args[0], FakeCudaTensor) else {args[0].device.type}
    if len(devices) > 1:
        raise DeviceMismatch(f"Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
                             f"({func})")
    out = func(*inner_args, **inner_kwargs)
    if not (to_cuda or ("cuda" in devices and target is None)):
        return out

    def wrap(x):
        if isinstance(x, torch.Tensor) and not isinstance(x, FakeCudaTensor):
            known = wrappers.get(id(x))  # an in-place op returns its own wrapper
            return known if known is not None else FakeCudaTensor(x)
        return x

    return tree_map(wrap, out)


class _Mode(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        return _dispatch(func, args, kwargs or {})


@contextlib.contextmanager
def fake_cuda():
    """Within the block, ``cuda:0`` is a CPU-backed device that checks placement (see above)."""
    import torch.cuda

    saved = torch.cuda._lazy_init, torch.cuda.current_device
    torch.cuda._lazy_init = lambda: None  # factories with device="cuda:0" ask for it first
    torch.cuda.current_device = lambda: 0
    try:
        with _Mode():
            yield CUDA
    finally:
        torch.cuda._lazy_init, torch.cuda.current_device = saved
