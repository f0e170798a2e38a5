# SPDX-License-Identifier: Apache-2.0
"""What the calls in a scheduler do: insert into a DSQ, consume one, create one, raise an error…

Each call site is turned into *effects* with the arguments that matter (DSQ id, slice, vtime, CPU,
flags). Calls to the program's own helper functions and function-like macros are expanded, with
their parameters replaced by the caller's arguments, so a wrapper such as
``static void enqueue_on(struct task_struct *p, u64 dsq) { scx_bpf_dsq_insert(p, dsq, …); }`` is
understood at every call site. Also: the call graph from the sched_ext callbacks, and questions
about where a call sits (under a condition, behind a ``bpf_ksym_exists()`` guard).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from tree_sitter import Node

from schedcp.verifier.static.source import Function, SourceModel, call_args, callee_name, parser, text_of, walk

MAX_EXPANSION_DEPTH = 4


class Kind(Enum):
    INSERT = "insert"
    INSERT_VTIME = "insert_vtime"
    CONSUME = "consume"  # move_to_local / consume: drains a DSQ into the local one
    MOVE = "move"  # dsq_move(_vtime): moves an iterated task to a destination DSQ
    ITER = "iter"  # iterating a DSQ (the source of dsq_move)
    CREATE = "create"
    DESTROY = "destroy"
    QUERY = "query"  # nr_queued / peek: names a DSQ without consuming it
    ERROR = "error"
    KICK = "kick"
    SET_SLICE = "set_slice"
    SET_VTIME = "set_vtime"
    PUSH = "push"  # bpf_map_push_elem: a task parked in a queue map
    POP = "pop"
    PICK_CPU = "pick_cpu"  # may return a negative value


@dataclass(frozen=True)
class Spec:
    kind: Kind
    roles: tuple[tuple[str, int], ...] = ()


_INSERT = Spec(Kind.INSERT, (("p", 0), ("dsq", 1), ("slice", 2), ("flags", 3)))
_INSERT_VTIME = Spec(Kind.INSERT_VTIME, (("p", 0), ("dsq", 1), ("slice", 2), ("vtime", 3), ("flags", 4)))
_MOVE = Spec(Kind.MOVE, (("dsq", 2), ("flags", 3)))
KFUNCS: dict[str, Spec] = {
    "scx_bpf_dsq_insert": _INSERT,
    "scx_bpf_dispatch": _INSERT,
    "scx_bpf_dsq_insert_vtime": _INSERT_VTIME,
    "scx_bpf_dispatch_vtime": _INSERT_VTIME,
    "__scx_bpf_dsq_insert_vtime": Spec(Kind.INSERT_VTIME, (("p", 0),)),
    "scx_bpf_dsq_move_to_local": Spec(Kind.CONSUME, (("dsq", 0),)),
    "scx_bpf_consume": Spec(Kind.CONSUME, (("dsq", 0),)),
    # 7.x: hands a DSQ's tasks back to ops.enqueue, which drains it as surely as consuming it.
    "scx_bpf_dsq_reenq": Spec(Kind.CONSUME, (("dsq", 0),)),
    "scx_bpf_dsq_move": _MOVE,
    "scx_bpf_dsq_move_vtime": _MOVE,
    "scx_bpf_dispatch_from_dsq": _MOVE,
    "scx_bpf_dispatch_vtime_from_dsq": _MOVE,
    "bpf_iter_scx_dsq_new": Spec(Kind.ITER, (("dsq", 1),)),
    "scx_bpf_create_dsq": Spec(Kind.CREATE, (("dsq", 0),)),
    "scx_bpf_destroy_dsq": Spec(Kind.DESTROY, (("dsq", 0),)),
    "scx_bpf_dsq_nr_queued": Spec(Kind.QUERY, (("dsq", 0),)),
    "scx_bpf_dsq_peek": Spec(Kind.QUERY, (("dsq", 0),)),
    "scx_bpf_error_bstr": Spec(Kind.ERROR),
    "scx_bpf_exit_bstr": Spec(Kind.ERROR),
    "scx_bpf_error": Spec(Kind.ERROR),
    "scx_bpf_exit": Spec(Kind.ERROR),
    "scx_bpf_kick_cpu": Spec(Kind.KICK, (("cpu", 0), ("flags", 1))),
    "scx_bpf_task_set_slice": Spec(Kind.SET_SLICE, (("slice", 1),)),
    "scx_bpf_dsq_move_set_slice": Spec(Kind.SET_SLICE, (("slice", 1),)),
    "scx_bpf_dispatch_from_dsq_set_slice": Spec(Kind.SET_SLICE, (("slice", 1),)),
    "scx_bpf_task_set_dsq_vtime": Spec(Kind.SET_VTIME, (("vtime", 1),)),
    "bpf_map_push_elem": Spec(Kind.PUSH, (("map", 0),)),
    "bpf_map_pop_elem": Spec(Kind.POP, (("map", 0),)),
    "scx_bpf_pick_idle_cpu": Spec(Kind.PICK_CPU),
    "scx_bpf_pick_idle_cpu_node": Spec(Kind.PICK_CPU),
    "scx_bpf_pick_any_cpu": Spec(Kind.PICK_CPU),
    "scx_bpf_pick_any_cpu_node": Spec(Kind.PICK_CPU),
    "scx_bpf_select_cpu_and": Spec(Kind.PICK_CPU),
}
HANDOFF_KINDS = frozenset({Kind.INSERT, Kind.INSERT_VTIME, Kind.PUSH, Kind.ERROR})
LOOP_MACROS = frozenset({"bpf_for", "bpf_for_each", "bpf_repeat"})
_CONDITIONAL_PARENTS = frozenset(
    {
        "if_statement",
        "switch_statement",
        "case_statement",
        "conditional_expression",
        "for_statement",
        "while_statement",
        "do_statement",
    }
)


def base_name(name: str) -> str:
    """scx_bpf_dsq_insert___v2 -> scx_bpf_dsq_insert (libbpf's flavour suffix)."""
    return name.split("___", 1)[0] if "___" in name else name


@dataclass
class Effect:
    kind: Kind
    kfunc: str  # the kfunc (or builtin) finally called
    site: Node  # the call in `function` (for wrappers: the call of the wrapper)
    function: Function
    args: dict[str, tuple[Node, Function]] = field(default_factory=dict)
    via: tuple[str, ...] = ()  # wrappers expanded to reach the kfunc
    inner_conditional: bool = False  # conditional inside a wrapper
    origin: tuple[Node, Function] | None = None  # the kfunc call itself when reached through wrappers

    @property
    def line(self) -> int:
        return self.site.start_point[0] + 1

    def arg(self, role: str) -> tuple[Node, Function] | None:
        return self.args.get(role)


class Effects:
    """Effects and call-graph facts for one SourceModel, computed lazily and memoized."""

    def __init__(self, model: SourceModel) -> None:
        self.model = model
        self._fn_effects: dict[str, list[Effect]] = {}
        self._in_progress: set[str] = set()
        self._macro_fns: dict[str, Function | None] = {}
        self._callees: dict[str, set[str]] = {}

    # -- effects ----------------------------------------------------------------------------------
    def of_function(self, fn: Function) -> list[Effect]:
        if fn.name in self._fn_effects:
            return self._fn_effects[fn.name]
        if fn.name in self._in_progress:
            return []
        self._in_progress.add(fn.name)
        out: list[Effect] = []
        for node in walk(fn.body):
            if node.type == "call_expression":
                out.extend(self.of_call(node, fn, 0))
        self._in_progress.discard(fn.name)
        self._fn_effects[fn.name] = out
        return out

    def of_call(self, call: Node, fn: Function, depth: int) -> list[Effect]:
        name = callee_name(call)
        if name is None:
            return []
        args = call_args(call)
        spec = KFUNCS.get(base_name(name))
        if name == "bpf_for_each" and args and text_of(args[0]) == "scx_dsq":
            spec = Spec(Kind.ITER, (("dsq", 2),))
        if spec is not None:
            spec_roles = {role: (args[i], fn) for role, i in spec.roles if i < len(args)}
            return [Effect(spec.kind, name, call, fn, spec_roles)]
        target = self.model.functions.get(name) or self.macro_function(name)
        if target is None or target is fn or depth >= MAX_EXPANSION_DEPTH or target.name in self._in_progress:
            return []
        out: list[Effect] = []
        for inner in self.of_function(target):
            roles: dict[str, tuple[Node, Function]] = {}
            for role, (node, ctx) in inner.args.items():
                if ctx is target and node.type == "identifier" and text_of(node) in target.params:
                    idx = target.params.index(text_of(node))
                    if idx < len(args):
                        roles[role] = (args[idx], fn)
                else:
                    roles[role] = (node, ctx)
            out.append(
                Effect(
                    inner.kind,
                    inner.kfunc,
                    call,
                    fn,
                    roles,
                    (name, *inner.via),
                    inner.inner_conditional or is_conditional(inner.site, target),
                    inner.origin or (inner.site, target),
                )
            )
        return out

    def macro_function(self, name: str) -> Function | None:
        """A function-like macro's body parsed as a function, so it can be expanded like one."""
        if name in self._macro_fns:
            return self._macro_fns[name]
        macro = self.model.macros.get(name)
        fn = None
        if macro is not None and macro.params is not None and "(" in macro.body:
            body = macro.body.replace("\\\n", "\n")
            tree = parser().parse(f"void __schedcp_macro(void) {{ {body}; }}".encode())
            for node in walk(tree.root_node):
                if node.type == "function_definition":
                    fn_body = node.child_by_field_name("body")
                    if fn_body is not None:
                        fn = Function(
                            name, node, fn_body, [p for p in macro.params if p != "..."], macro.line, macro.unit
                        )
                    break
        self._macro_fns[name] = fn
        return fn

    def all(self) -> list[Effect]:
        return [e for fn in self.model.functions.values() for e in self.of_function(fn)]

    def in_main(self) -> list[Effect]:
        return [e for fn in self.model.main_functions() for e in self.of_function(fn)]

    # -- call graph -------------------------------------------------------------------------------
    def callees(self, fn: Function) -> set[str]:
        if fn.name not in self._callees:
            names = set()
            for node in walk(fn.body):
                if node.type == "call_expression":
                    name = callee_name(node)
                    if name and name != fn.name and (name in self.model.functions or self.macro_function(name)):
                        names.add(name)
                elif node.type == "identifier" and text_of(node) in self.model.functions:
                    names.add(text_of(node))  # callbacks passed to bpf_loop / timers
            names.discard(fn.name)
            self._callees[fn.name] = names
        return self._callees[fn.name]

    def reachable(self, root: str) -> set[str]:
        """Functions (and macros) reachable from `root`, including itself."""
        seen: set[str] = set()
        todo = [root]
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            fn = self.model.functions.get(name) or self.macro_function(name)
            if fn is not None:
                todo.extend(self.callees(fn))
        return seen

    def reachable_from_callbacks(self) -> set[str] | None:
        """Every function some callback can reach; None when no callbacks could be identified."""
        if not self.model.callbacks:
            return None
        out: set[str] = set()
        for fn_name in self.model.callbacks.values():
            out |= self.reachable(fn_name)
        return out

    def callbacks_reaching(self, fn_name: str) -> list[str]:
        return sorted(op for op, cb in self.model.callbacks.items() if fn_name in self.reachable(cb))


def is_conditional(node: Node, fn: Function) -> bool:
    """True when `node` only runs on some paths through `fn` (inside an if, loop, switch, ?:, && …)."""
    child = node
    parent = node.parent
    while parent is not None and parent != fn.body:
        if parent.type in _CONDITIONAL_PARENTS:
            cond = parent.child_by_field_name("condition")
            if cond is None or not _contains(cond, child):
                return True
        if parent.type == "binary_expression" and text_of(parent.child_by_field_name("operator")) in ("&&", "||"):
            right = parent.child_by_field_name("right")
            if right is not None and _contains(right, child):
                return True
        if parent.type == "compound_statement" and (_after_loop_macro(parent) or _early_exit_before(parent, child)):
            return True
        child = parent
        parent = parent.parent
    return parent is not None and _early_exit_before(parent, child)


def _early_exit_before(block: Node, child: Node) -> bool:
    """A statement before `child` in this block can leave it (return/goto), so child may not run."""
    for sibling in block.named_children:
        if sibling == child or sibling.start_byte >= child.start_byte:
            return False
        if any(n.type in ("return_statement", "goto_statement") for n in walk(sibling)):
            return True
    return False


def _after_loop_macro(block: Node) -> bool:
    prev = block.prev_named_sibling
    if prev is None or prev.type != "expression_statement" or not prev.named_children:
        return False
    call = prev.named_children[0]
    return call.type == "call_expression" and callee_name(call) in LOOP_MACROS


def _contains(outer: Node, inner: Node) -> bool:
    return outer.start_byte <= inner.start_byte and inner.end_byte <= outer.end_byte


def guard_texts(node: Node, fn: Function) -> list[str]:
    """Conditions of the if/?:/#if constructs enclosing `node` within `fn`."""
    out = []
    parent = node.parent
    while parent is not None and parent != fn.node:
        if parent.type in ("if_statement", "conditional_expression", "preproc_if", "preproc_elif"):
            cond = parent.child_by_field_name("condition")
            if cond is not None and not _contains(cond, node):
                out.append(text_of(cond))
        elif parent.type in ("preproc_ifdef", "preproc_elifdef"):
            out.append(text_of(parent.child_by_field_name("name")))
        parent = parent.parent
    return out


def is_ksym_guarded(node: Node, fn: Function, kfunc: str) -> bool:
    """A call that only runs when the kernel has the kfunc (or as the fallback when it lacks another)."""
    for cond in guard_texts(node, fn):
        if "bpf_ksym_exists" in cond or "SCHEDCP_HAVE_KFUNC" in cond or "SCHEDCP_KERNEL" in cond:
            return True
    return f"bpf_ksym_exists({kfunc})" in text_of(fn.body).replace(" ", "")
