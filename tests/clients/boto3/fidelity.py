"""The model-derived tables of docs/simulator.md: every operation the simulator serves, its
route and modelled errors, and every constrained member, read from the published models that
botocore ships (model.py). No limit in those tables is typed by hand.

    python fidelity.py            print the tables
    python fidelity.py --check F  fail if F's tables differ from the model's
"""

import sys

import model

BEGIN = "<!-- generated from the published models by tests/clients/boto3/fidelity.py: begin -->"
END = "<!-- generated from the published models by tests/clients/boto3/fidelity.py: end -->"


def tables():
    lines = [BEGIN, "", "### Operations and their errors", ""]
    lines += ["| service | operation | route | errors the model lists (HTTP status) |", "|---|---|---|---|"]
    for service, name in model.SERVED:
        op = model.service(service).operation_model(name)
        http = op.http
        errors = ", ".join(f"{code} {status}" for code, status in sorted(model.errors(op).items()))
        lines.append(f"| {service} | {name} | `{http['method']} {http['requestUri']}` | {errors} |")
    lines += ["", "### Field constraints", ""]
    lines += ["| operation | member | in | constraint | required |", "|---|---|---|---|---|"]
    for service, name in model.SERVED:
        op = model.service(service).operation_model(name)
        for path, member, required, where in model.constraints(op.input_shape):
            if member.type_name == "structure" and not required:
                continue
            lines.append(
                f"| {name} | {'.'.join(path)} | {where} | {model.describe(member)} | {'yes' if required else ''} |"
            )
    lines += ["", END]
    return "\n".join(lines)


def section(text):
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < 0:
        return None
    return text[start : end + len(END)]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        with open(sys.argv[2], encoding="utf-8") as f:
            current = section(f.read())
        if current != tables():
            sys.exit(f"{sys.argv[2]}: the generated tables are out of date; run fidelity.py and paste its output")
    else:
        print(tables())
