// {{name}}: a Ward task action. Input {"name": "Ada"} → result
// {"message": "Hello, Ada!"}, one log line, the counter `greetings`.
import { action, InvalidInput } from "./ward-sdk.js";

export const run = action((ctx, input) => {
  const name = String(input?.name ?? "world").trim();
  if (!name) throw new InvalidInput("name must not be empty");
  ctx.info(`greeting ${name}`);
  ctx.counter("greetings");
  return { message: `Hello, ${name}!` };
});
