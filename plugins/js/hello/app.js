// hello, in JavaScript: input {"name": "Ada"} → result {"message": "Hello, Ada!"},
// one log line, counter `greetings`. {"fail": "retryable"|"fatal"} fails as asked,
// {"spin": true} loops until a limit stops it (the tests' error and limit paths).
import { action, Fatal, InvalidInput } from "./ward-sdk.js";

export const run = action((ctx, input) => {
  input = input ?? {};
  if (input.fail === "retryable") throw new Error("asked to fail");
  if (input.fail === "fatal") throw new Fatal("asked to fail for good");
  if (input.spin) for (;;) {}
  const name = String(input.name ?? "world").trim();
  if (!name) throw new InvalidInput("name must not be empty");
  const message = `Hello, ${name}!`;
  ctx.info(`greeting ${name}`);
  ctx.counter("greetings");
  ctx.output("message", message);
  return { message };
});
