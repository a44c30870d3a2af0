"""Arrays a kernel passes to its helpers without reference counting.

numba increments and decrements the reference count of every array a compiled function is passed, at its
entry and exits, with atomic instructions, and its pruning pass cannot remove the pairs in a helper with
loops and early returns. Called per event of every simulated run, that was most of a decision's time (perf,
then gdb on ``NRT_incref``). :func:`borrowed` is a view of the same memory with no owner (numba's
reference-count calls return at once on it, as they do for arrays built on foreign memory), so it costs
nothing to pass around. It is valid while the array it was taken from is: take it inside the kernel that
holds that array, pass it down, and never return or store it (a returned borrowed view would outlive its
memory).
"""

from __future__ import annotations

from typing import Any

from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

_null: Any = cgutils.get_null_value  # untyped in numba

__all__ = ["borrowed"]


def _borrow_array(context: Any, builder: Any, typ: types.Array, value: Any) -> Any:
    src = context.make_array(typ)(context, builder, value=value)
    view = context.make_array(typ)(context, builder)
    for field in ("nitems", "itemsize", "data", "shape", "strides"):
        setattr(view, field, getattr(src, field))
    view.meminfo = _null(view.meminfo.type)
    view.parent = _null(view.parent.type)
    return view._getvalue()


@intrinsic
def _borrowed(typingctx: Any, value: Any) -> Any:
    """An array, or a tuple of arrays and scalars, with every array replaced by an owner-less view of it."""
    if isinstance(value, types.Array):

        def one(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            return _borrow_array(context, builder, value, args[0])

        return value(value), one
    if isinstance(value, types.BaseTuple):
        members: Any = value  # a tuple type iterates over its members' types (numba's stubs do not say so)

        def each(context: Any, builder: Any, sig: Any, args: Any) -> Any:
            out = []
            for k, typ in enumerate(members):
                item = builder.extract_value(args[0], k)
                if isinstance(typ, types.Array):
                    item = _borrow_array(context, builder, typ, item)
                else:  # the result is a new reference: anything counted in it is counted once more
                    context.nrt.incref(builder, typ, item)
                out.append(item)
            return context.make_tuple(builder, value, out)

        return value(value), each
    return None


borrowed: Any = _borrowed  # called from kernels only, with numba's typing, not Python's
