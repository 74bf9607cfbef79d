"""Query parameters: those a route does not take are refused, never silently ignored (400 naming them).

Usage:
    router = APIRouter(dependencies=[Depends(refuse_unknown_query)])

    @router.get("/fine_tuning/jobs")
    @takes_dict_query("metadata")               # metadata[key]=value, as the openai client sends a dict
    def list_jobs(request: Request, ...):
        wanted = dict_query(request, "metadata")  # {"key": "value"}
"""

from __future__ import annotations

import re
from typing import Any, Callable

from fastapi import Request

from lmtune.serve.auth import Project
from lmtune.serve.errors import APIError

DICT_KEY = re.compile(r"^([A-Za-z_]+)\[(.+)\]$")


def takes_dict_query(*names: str) -> Callable[[Any], Any]:
    """Mark a route function as taking `name[key]=value` query parameters for each of `names`."""
    def mark(fn: Any) -> Any:
        fn.dict_query_params = names
        return fn
    return mark


def dict_query(request: Request, name: str) -> dict[str, str]:
    """The `name[key]=value` query parameters of the request as {key: value}."""
    out = {}
    for key, value in request.query_params.multi_items():
        found = DICT_KEY.match(key)
        if found and found.group(1) == name:
            out[found.group(2)] = value
    return out


def _query_names(dependant: Any) -> set[str]:
    """The query parameter names of a route's dependant and of all its sub-dependencies."""
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


def refuse_unknown_query(request: Request, _: Project) -> None:
    """Router dependency: 400 invalid_request_error naming every query parameter the route does not take
    (after the API key is checked: a caller without one gets 401 first)."""
    route = request.scope.get("route")
    if route is None:
        return
    known = _query_names(route.dependant)
    dicts = getattr(route.endpoint, "dict_query_params", ())
    unknown = []
    for key in dict.fromkeys(request.query_params.keys()):
        found = DICT_KEY.match(key)
        if key not in known and not (found and found.group(1) in dicts):
            unknown.append(key)
    if unknown:
        names = ", ".join(repr(k) for k in unknown)
        raise APIError(400, f"Unrecognized query parameter{'s' if len(unknown) > 1 else ''}: {names}; "
                       f"this endpoint takes {', '.join(sorted(known | {d + '[key]' for d in dicts})) or 'none'}",
                       param=unknown[0], code="unknown_parameter")
