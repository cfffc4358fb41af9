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


def _prefetch(typingctx: Any, array: Any, index: Any) -> Any:
    """``prefetch(a, i)``: bring the cache line that holds ``a[i]`` (of a 2-D array, the first
    item of row ``i``) towards the core, to read, kept in every cache level: a slot of the
    rate hash, whose rows are cache lines, or of the billed callids' table
    (``pipelines.dedupe``)."""
    if not (isinstance(array, types.Array) and array.ndim >= 1):
        return None
    if not isinstance(index, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        array_type = signature.args[0]
        first = context.cast(builder, args[1], signature.args[1], types.intp)
        zero = context.get_constant(types.intp, 0)
        view = context.make_array(array_type)(context, builder, args[0])
        indices = [first] + [zero] * (array_type.ndim - 1)
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, indices)
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        hint = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        function = cgutils.get_or_insert_function(builder.module, hint, "llvm.prefetch.p0")
        # read (0), highest temporal locality (3), data cache (1)
        builder.call(function, [builder.bitcast(pointer, byte_pointer), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(array, index), codegen


# Typed as Any: numba calls it with the two arguments; mypy would see the typing context too.
prefetch: Any = intrinsic(_prefetch)
