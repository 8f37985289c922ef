"""{{name}}: a Ward task action. Input `{"name": "Ada"}` → result
`{"message": "Hello, Ada!"}`, one log line, the counter `greetings`."""

from dataclasses import dataclass

from ward_sdk import Context, InvalidInput, WitWorld, action  # noqa: F401 (WitWorld: the export)


@dataclass
class Input:
    name: str = "world"


@action
def hello(ctx: Context, input: Input) -> dict:
    name = input.name.strip()
    if not name:
        raise InvalidInput("name must not be empty")
    ctx.info(f"greeting {name}")
    ctx.counter("greetings")
    return {"message": f"Hello, {name}!"}
