"""Bounds on a GraphQL document before it runs: its size, its depth, how many fields and
aliases it selects, and what it would cost (every field, times the sizes of the lists it is
under). Pure: the gateway parses, this measures, the gateway refuses with a 400.

Why: one request that asks ``compute_session_list(limit: 100)`` twenty times under aliases,
or fragments that spread each other into millions of fields, costs the gateway and Redis
as much as thousands of ordinary requests. The walk itself is bounded: it stops at the first
limit crossed, so a document built to explode when expanded is refused after a few hundred
steps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLSyntaxError,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    parse,
)

from ..domain.errors import InvalidAPIParameters

__all__ = ["QueryCost", "QueryLimits", "QueryTooComplex", "measure", "parse_bounded"]


class QueryTooComplex(InvalidAPIParameters):
    title = "The GraphQL query is too large or too complex."


@dataclass(frozen=True)
class QueryLimits:
    max_bytes: int = 16_384
    """The document's size in UTF-8 (the official client's largest query is about 1 KiB)."""
    max_tokens: int = 4_000
    max_depth: int = 8
    """Nested selections: ``compute_session_list { items { containers { id } } }`` is 4."""
    max_fields: int = 300
    """Field selections, fragments expanded."""
    max_aliases: int = 10
    max_root_fields: int = 8
    max_cost: int = 40_000
    """Fields times the sizes of the lists they are under: a full page of 100 sessions with
    every field and their containers' is about 20,000."""
    default_page: int = 100
    """A page size not given as a literal or a variable counts as the largest page."""
    list_sizes: tuple[tuple[str, int], ...] = (("containers", 8), ("dependencies", 8))
    """Object lists that are not paged: the most items each is counted as."""


@dataclass
class QueryCost:
    depth: int = 0
    fields: int = 0
    aliases: int = 0
    root_fields: int = 0
    cost: int = 0


def parse_bounded(query: str, limits: QueryLimits) -> DocumentNode | GraphQLSyntaxError:
    """The document, parsed within the size and token bounds (refused past them), or its
    syntax error (answered as GraphQL answers one, in ``errors``)."""
    size = len(query.encode("utf-8", "surrogatepass"))
    if size > limits.max_bytes:
        raise QueryTooComplex(f"the query is {size} bytes; at most {limits.max_bytes}")
    try:
        return parse(query, no_location=True, max_tokens=limits.max_tokens)
    except GraphQLSyntaxError as exc:
        if "parsing aborted" in exc.message.lower():  # the token bound
            raise QueryTooComplex(f"the query has more than {limits.max_tokens} tokens") from None
        return exc


def measure(document: DocumentNode, variables: Mapping[str, Any], limits: QueryLimits) -> QueryCost:
    """The figures of the costliest operation in ``document``; raises
    :class:`QueryTooComplex` at the first limit crossed."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    worst = QueryCost()
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            walk = _Walk(fragments, variables, limits)
            walk.selections(definition.selection_set, depth=1, multiplier=1, root=True)
            if walk.figures.cost >= worst.cost:
                worst = walk.figures
    return worst


class _Walk:
    def __init__(
        self,
        fragments: Mapping[str, FragmentDefinitionNode],
        variables: Mapping[str, Any],
        limits: QueryLimits,
    ) -> None:
        self.fragments = fragments
        self.variables = variables
        self.limits = limits
        self.list_sizes = dict(limits.list_sizes)
        self.figures = QueryCost()
        self._spreading: list[str] = []

    def selections(
        self, selection_set: SelectionSetNode | None, depth: int, multiplier: int, root: bool
    ) -> None:
        if selection_set is None:
            return
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                self.field(selection, depth, multiplier, root)
            elif isinstance(selection, InlineFragmentNode):
                self.selections(selection.selection_set, depth, multiplier, root)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self.fragments.get(name)
                if fragment is None or name in self._spreading:
                    continue  # unknown or cyclic: graphql-core's validation refuses it
                self._spreading.append(name)
                self.selections(fragment.selection_set, depth, multiplier, root)
                self._spreading.pop()

    def field(self, node: FieldNode, depth: int, multiplier: int, root: bool) -> None:
        figures, limits = self.figures, self.limits
        figures.fields += 1
        figures.depth = max(figures.depth, depth)
        figures.cost += multiplier
        if node.alias is not None:
            figures.aliases += 1
        if root:
            figures.root_fields += 1
        self._check()
        if node.selection_set is None:
            return
        inner = multiplier * self._list_size(node)
        self.selections(node.selection_set, depth + 1, min(inner, limits.max_cost + 1), False)

    def _list_size(self, node: FieldNode) -> int:
        name = node.name.value
        if name in self.list_sizes:
            return self.list_sizes[name]
        for argument in node.arguments or ():
            if argument.name.value == "limit":
                return max(1, self._int(argument.value))
        return 1

    def _int(self, value: Any) -> int:
        found: Any = None
        if isinstance(value, IntValueNode):
            found = value.value
        elif isinstance(value, VariableNode):
            found = self.variables.get(value.name.value)
        try:
            return int(found) if found is not None else self.limits.default_page
        except (TypeError, ValueError):
            return self.limits.default_page
        except OverflowError:  # an infinite page: over every bound
            return self.limits.max_cost + 1

    def _check(self) -> None:
        figures, limits = self.figures, self.limits
        for what, value, most in (
            ("depth", figures.depth, limits.max_depth),
            ("fields", figures.fields, limits.max_fields),
            ("aliases", figures.aliases, limits.max_aliases),
            ("top-level fields", figures.root_fields, limits.max_root_fields),
            ("cost", figures.cost, limits.max_cost),
        ):
            if value > most:
                raise QueryTooComplex(f"the query's {what} is over the limit of {most}")
