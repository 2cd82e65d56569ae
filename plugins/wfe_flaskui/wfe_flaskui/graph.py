"""Workflow graphs as inline SVG drawn on the server: phases as boxes, routes as arrows.

Phases are placed left to right in layers (a phase sits one layer right of the
furthest phase that leads to it), routes to the next column run straight across,
routes back to an earlier phase or over a column arc above or below the boxes (never
through one), and ``on_timeout`` jumps are dashed. Every piece of text is escaped.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from markupsafe import Markup, escape

from wfcore import Phase, TaskType, WorkflowSpec

__all__ = ["TYPE_COLOURS", "phase_edges", "workflow_svg"]

#: Fill and stroke per task type; None is "the task's own type".
TYPE_COLOURS: dict[TaskType | None, tuple[str, str]] = {
    TaskType.HUMAN: ("#fef3c7", "#b45309"),
    TaskType.AGENTIC: ("#ede9fe", "#6d28d9"),
    TaskType.FUNCTIONAL: ("#e0f2fe", "#0369a1"),
    None: ("#f1f5f9", "#475569"),
}

_W, _H = 176, 58
_GAP_X, _GAP_Y = 64, 30
_PAD = 24
_END_R = 8
_END_GAP = 30
_LOOP_ROOM = 46
_MAX_LABEL = 22


def phase_edges(spec: WorkflowSpec) -> list[tuple[str, str | None, str]]:
    """Every route of a workflow as ``(from, to, kind)``; ``to`` None means the end.

    ``kind`` is ``"next"`` for a route after the phase ran and ``"timeout"`` for
    an ``on_timeout`` jump.
    """
    edges: list[tuple[str, str | None, str]] = []
    names = spec.classifications
    for index, phase in enumerate(spec.phases):
        nxt = phase.next_classifications
        if nxt is None:
            target = names[index + 1] if index + 1 < len(names) else None
            edges.append((phase.target_classification, target, "next"))
        elif not nxt:
            edges.append((phase.target_classification, None, "next"))
        else:
            edges.extend((phase.target_classification, n, "next") for n in nxt)
        if isinstance(phase.on_timeout, dict) and "goto" in phase.on_timeout:
            edges.append((phase.target_classification, phase.on_timeout["goto"], "timeout"))
    return edges


def _layers(spec: WorkflowSpec, edges: list[tuple[str, str | None, str]]) -> dict[str, int]:
    names = spec.classifications
    succ: dict[str, list[str]] = {n: [] for n in names}
    for src, dst, _ in edges:
        if dst is not None and dst not in succ[src]:
            succ[src].append(dst)
    # Depth-first search from the first phase finds the back edges (loops), which
    # are left out of the layering so that it stays acyclic.
    back: set[tuple[str, str]] = set()
    state: dict[str, int] = {}
    order: list[str] = []

    def visit(node: str) -> None:
        stack: list[tuple[str, int]] = [(node, 0)]
        state[node] = 1
        while stack:
            current, i = stack.pop()
            if i < len(succ[current]):
                stack.append((current, i + 1))
                nxt = succ[current][i]
                if state.get(nxt) == 1:
                    back.add((current, nxt))
                elif nxt not in state:
                    state[nxt] = 1
                    stack.append((nxt, 0))
            else:
                state[current] = 2
                order.append(current)

    for name in names:
        if name not in state:
            visit(name)
    layer = dict.fromkeys(names, 0)
    for node in reversed(order):  # reverse post-order is a topological order
        for nxt in succ[node]:
            if (node, nxt) not in back:
                layer[nxt] = max(layer[nxt], layer[node] + 1)
    return layer


def _label(text: str) -> str:
    return text if len(text) <= _MAX_LABEL else text[: _MAX_LABEL - 1] + "…"


def _type_name(phase: Phase) -> str:
    return phase.assigned_to.value if phase.assigned_to else "task's type"


def workflow_svg(
    spec: WorkflowSpec,
    counts: Mapping[str, int] | None = None,
    link: Callable[[str], str] | None = None,
    uid: str = "g",
) -> Markup:
    """An ``<svg>`` drawing of the workflow.

    :param counts: unfinished tasks per phase, shown in a badge on each box.
    :param link: a URL for each phase's box (e.g. its tasks), or None.
    :param uid: a prefix for element ids, unique on the page.
    """
    counts = counts or {}
    edges = phase_edges(spec)
    layer = _layers(spec, edges)
    columns: dict[int, list[str]] = {}
    for name in spec.classifications:
        columns.setdefault(layer[name], []).append(name)
    rows = max(len(c) for c in columns.values())
    top_of = {names[0] for names in columns.values()}
    # A route to the next column runs straight across the gap between columns.
    # Any other (a loop back, or a jump over a column) would cross the boxes
    # between its ends: it arcs above every box when both ends are at the top of
    # their column (so it leaves and enters without crossing another box), else below.
    arcs = [(s, d) for s, d, _ in edges if d is not None and layer[d] != layer[s] + 1]
    over = {(s, d) for s, d in arcs if s in top_of and d in top_of and s != d}
    above = _LOOP_ROOM if over else 0
    below = _LOOP_ROOM if len(over) < len(arcs) else 0
    height_inner = rows * _H + (rows - 1) * _GAP_Y
    top = _PAD + above
    start_x = _PAD + _END_R
    x0 = start_x + _END_R + _GAP_X * 0.6
    pos: dict[str, tuple[float, float]] = {}
    for col, names in columns.items():
        offset = (height_inner - (len(names) * _H + (len(names) - 1) * _GAP_Y)) / 2
        for row, name in enumerate(names):
            pos[name] = (x0 + col * (_W + _GAP_X), top + offset + row * (_H + _GAP_Y))
    width = x0 + max(columns) * (_W + _GAP_X) + _W + _END_GAP + 2 * _END_R + _PAD
    height = top + height_inner + below + _PAD
    marker = f"{uid}-arrow"
    parts: list[str] = [
        f'<svg class="wfe-graph" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'aria-label="{escape("workflow " + spec.name)}">',
        f'<defs><marker id="{escape(marker)}" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" fill="#64748b"/></marker></defs>',
    ]
    fx, fy = pos[spec.phases[0].target_classification]
    parts.append(
        f'<circle class="wfe-start" cx="{start_x:.1f}" cy="{fy + _H / 2:.1f}" r="{_END_R}" '
        'fill="#334155"><title>start</title></circle>'
    )
    parts.append(_curve(start_x + _END_R, fy + _H / 2, fx, fy + _H / 2, marker, "next", None))
    for index, (src, dst, kind) in enumerate(edges):
        sx, sy = pos[src]
        # A timeout jump runs a little lower than a normal route to the same place.
        shift = 9.0 if kind == "timeout" else 0.0
        if dst is None:
            # Each phase that can end the workflow gets its own end mark beside it.
            ex = sx + _W + _END_GAP + _END_R
            ey = sy + _H / 2
            route = (src, "")
            parts.append(_curve(sx + _W, ey, ex - _END_R - 1, ey, marker, kind, route))
            parts.append(
                f'<circle class="wfe-end" cx="{ex:.1f}" cy="{ey:.1f}" r="{_END_R}" fill="#fff" '
                'stroke="#334155" stroke-width="3"><title>completed</title></circle>'
            )
            continue
        dx, dy = pos[dst]
        if layer[dst] == layer[src] + 1:
            parts.append(
                _curve(
                    sx + _W, sy + _H / 2 + shift, dx, dy + _H / 2 + shift, marker, kind, (src, dst)
                )
            )
            continue
        lane = (index % 3) * 9
        if (src, dst) in over:
            a, b, y = (sx + _W * 0.62, sy), (dx + _W * 0.38, dy - 1), top - 16 - lane
        else:
            low = top + height_inner + 16 + lane
            a, b, y = (sx + _W * 0.62, sy + _H), (dx + _W * 0.38, dy + _H + 1), low
        # Control points placed so that the curve's highest (or lowest) point is y.
        control = (y - (a[1] + b[1]) / 8) / 0.75
        path = (
            f"M{a[0]:.1f},{a[1]:.1f} C{a[0]:.1f},{control:.1f} {b[0]:.1f},{control:.1f} "
            f"{b[0]:.1f},{b[1]:.1f}"
        )
        parts.append(_edge_path(path, marker, kind, (src, dst)))
    for phase in spec.phases:
        parts.append(_node(phase, pos[phase.target_classification], counts, link))
    parts.append("</svg>")
    return Markup("".join(parts))


def _curve(
    x1: float,
    y1: float,
    x2: float,
    y2: float,
    marker: str,
    kind: str,
    route: tuple[str, str] | None,
) -> str:
    bend = max(24.0, (x2 - x1) / 2)
    path = (
        f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
    )
    return _edge_path(path, marker, kind, route)


def _edge_path(path: str, marker: str, kind: str, route: tuple[str, str] | None) -> str:
    """One drawn route; ``route`` is ``(from, to)`` (``to`` empty: the end), None for the start."""
    dash = ' stroke-dasharray="5 4"' if kind == "timeout" else ""
    title = "<title>on timeout</title>" if kind == "timeout" else ""
    ends = "" if route is None else f' data-from="{escape(route[0])}" data-to="{escape(route[1])}"'
    return (
        f'<path class="wfe-edge wfe-edge-{kind}"{ends} d="{path}" fill="none" stroke="#64748b" '
        f'stroke-width="1.6"{dash} marker-end="url(#{escape(marker)})">{title}</path>'
    )


def _node(
    phase: Phase,
    at: tuple[float, float],
    counts: Mapping[str, int],
    link: Callable[[str], str] | None,
) -> str:
    x, y = at
    name = phase.target_classification
    fill, stroke = TYPE_COLOURS[phase.assigned_to]
    count = int(counts.get(name, 0))
    kind = phase.assigned_to.value if phase.assigned_to else "default"
    tooltip = f"{name} ({_type_name(phase)}): {count} task(s) here now"
    if phase.instructions:
        tooltip += "\n" + phase.instructions
    badge_fill = stroke if count else "#cbd5e1"
    badge_text = "#fff" if count else "#334155"
    label = f"{count}" if count < 1000 else "999+"
    badge_w = 14 + 7 * len(label)
    body = (
        f'<g class="wfe-node wfe-node-{kind}" data-phase="{escape(name)}" data-count="{count}">'
        f"<title>{escape(tooltip)}</title>"
        f'<rect x="{x:.1f}" y="{y:.1f}" width="{_W}" height="{_H}" rx="10" fill="{fill}" '
        f'stroke="{stroke}" stroke-width="1.8"/>'
        f'<text x="{x + 12:.1f}" y="{y + 24:.1f}" font-size="14" font-weight="600" '
        f'fill="#0f172a">{escape(_label(name))}</text>'
        f'<text x="{x + 12:.1f}" y="{y + 43:.1f}" font-size="12" fill="{stroke}">'
        f"{escape(_type_name(phase))}</text>"
        f'<rect class="wfe-badge" x="{x + _W - badge_w - 8:.1f}" y="{y + 32:.1f}" '
        f'width="{badge_w}" height="18" rx="9" fill="{badge_fill}"/>'
        f'<text x="{x + _W - 8 - badge_w / 2:.1f}" y="{y + 45:.1f}" font-size="11" '
        f'font-weight="700" text-anchor="middle" fill="{badge_text}">{escape(label)}</text>'
        "</g>"
    )
    if link is None:
        return body
    return f'<a href="{escape(link(name))}">{body}</a>'
