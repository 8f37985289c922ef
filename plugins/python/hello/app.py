"""hello, in Python: input `{"name": "Ada"}` → result `{"message": "Hello, Ada!"}`,
one log line, counter `greetings`. `{"fail": "retryable"|"fatal"}` fails as asked,
`{"spin": true}` loops until a limit stops it (the tests' error and limit paths)."""

from ward_sdk import Context, Fatal, InvalidInput, WitWorld, action  # noqa: F401


@action
def hello(ctx: Context, input: dict) -> dict:
    input = input or {}
    if input.get("fail") == "retryable":
        raise RuntimeError("asked to fail")  # any exception: retryable
    if input.get("fail") == "fatal":
        raise Fatal("asked to fail for good")
    if input.get("spin"):
        n = 0
        while True:
            n += 1
    name = str(input.get("name", "world")).strip()
    if not name:
        raise InvalidInput("name must not be empty")
    message = f"Hello, {name}!"
    ctx.info(f"greeting {name}")
    ctx.counter("greetings")
    ctx.output("message", message)
    return {"message": message}
