"""A cache prefetch hint for numba kernels: LLVM's ``llvm.prefetch`` on one array element.

numba has no prefetch of its own. A hint neither faults nor returns anything; a kernel that
knows which cache lines it will read soon (``kernels.longest_prefix`` knows every slot it
will probe, a block of numbers ahead) asks for them early, so that the misses overlap with
the work before the reads.
"""

from __future__ import annotations

from typing import Any

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


def _hint(context: Any, builder: Any, array_type: Any, array: Any, indices: list[Any]) -> None:
    """Emit ``llvm.prefetch`` of the cache line that holds ``array[indices]``."""
    view = context.make_array(array_type)(context, builder, array)
    pointer = cgutils.get_item_pointer(context, builder, array_type, view, indices)
    byte_pointer = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    hint = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
    function = cgutils.get_or_insert_function(builder.module, hint, "llvm.prefetch.p0")
    # read (0), highest temporal locality (3), data cache (1)
    builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])


def _prefetch_row(typingctx: Any, array: Any, index: Any) -> Any:
    """``prefetch_row(a, i)``: bring the cache line of ``a[i, 0]`` towards the core (to read,
    kept in every cache level) — a 2-D array whose rows are cache lines, like the rate hash's
    slots."""
    if not (isinstance(array, types.Array) and array.ndim == 2):
        return None
    if not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        zero = context.get_constant(types.intp, 0)
        _hint(context, builder, signature.args[0], args[0], [index, zero])
        return context.get_dummy_value()

    return types.void(array, index), codegen


def _prefetch_item(typingctx: Any, array: Any, index: Any) -> Any:
    """``prefetch_item(a, i)``: the same for the line of ``a[i]`` of a 1-D array (a slot of
    the billed callids' table, ``pipelines.dedupe``)."""
    if not (isinstance(array, types.Array) and array.ndim == 1):
        return None
    if not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        index = context.cast(builder, args[1], signature.args[1], types.intp)
        _hint(context, builder, signature.args[0], args[0], [index])
        return context.get_dummy_value()

    return types.void(array, index), codegen


# Typed as Any: numba calls them with the two arguments; mypy would see the typing context too.
prefetch_row: Any = intrinsic(_prefetch_row)
prefetch_item: Any = intrinsic(_prefetch_item)
