"""The published API models of Amazon Connect (`connect`) and its participant service
(`connectparticipant`), as botocore ships them: the source of every operation, field constraint
and error code the boto3 suite checks and docs/simulator.md tabulates. Nothing here is typed
from memory."""

import botocore.session

_session = botocore.session.get_session()

CONNECT = _session.get_service_model("connect")
PARTICIPANT = _session.get_service_model("connectparticipant")

# The simulator serves one operation of `connect` (the customer's entry point) and every
# operation of `connectparticipant`.
SERVED = [("connect", "StartChatContact")] + [
    ("connectparticipant", name) for name in sorted(PARTICIPANT.operation_names)
]


def service(name):
    return CONNECT if name == "connect" else PARTICIPANT


def errors(op_model):
    """{error code: HTTP status} the model lists for an operation."""
    return {
        shape.name: shape.metadata.get("error", {}).get("httpStatusCode")
        for shape in op_model.error_shapes
    }


def constraints(shape, path=()):
    """Every constrained member under `shape`, as (path, member shape, required, location).

    Walks structures (not lists or maps of structures: the operations the simulator serves put
    no constraint there that a customer sets)."""
    out = []
    required = set(shape.required_members)
    for name, member in shape.members.items():
        where = member.serialization.get("location", "body")
        here = path + (name,)
        meta = member.metadata
        if member.type_name == "structure":
            out.append((here, member, name in required, where))
            out.extend(constraints(member, here))
        elif "min" in meta or "max" in meta or getattr(member, "enum", None) or name in required:
            out.append((here, member, name in required, where))
    return out


def describe(member):
    """The constraint of a member shape in words, e.g. "string, 1-256"."""
    meta = member.metadata
    kind = member.type_name
    if getattr(member, "enum", None):
        return f"{kind}, one of {', '.join(member.enum)}"
    lo, hi = meta.get("min"), meta.get("max")
    unit = {"string": " chars", "list": " items", "map": " entries"}.get(kind, "")
    if lo is not None and hi is not None:
        bound = f"exactly {lo}" if lo == hi else f"{lo}-{hi}"
        return f"{kind}, {bound}{unit}"
    if lo is not None:
        return f"{kind}, at least {lo}{unit}"
    if hi is not None:
        return f"{kind}, at most {hi}{unit}"
    return kind
