// Ward's SDK for task actions written in JavaScript (componentize-js).
//
// An action is one function; `action` makes it the component's `run`:
//
//   import { action, InvalidInput } from "./ward-sdk.js";
//   export const run = action((ctx, input) => {
//     const name = (input.name ?? "world").trim();
//     if (!name) throw new InvalidInput("name must not be empty");
//     ctx.counter("greetings");
//     return { message: `Hello, ${name}!` };
//   });
//
// The input is the parsed JSON; the result any JSON value. Throw
// `Retryable`, `Fatal` or `InvalidInput` to say how the attempt failed; any
// other exception is retryable, with its stack in the message. An async
// action is awaited. `console.log` goes to the attempt's stdout.
//
// The build puts this file next to the app's module (componentize-js reads
// the modules of the directory it builds from). WIT imports are named with
// their package's version.
import * as host from "ward:action/host@0.1.0";

export class ActionFailed extends Error {}
/** A transient failure: another attempt runs under the task's retry policy. */
export class Retryable extends ActionFailed {}
/** A permanent failure: the task run ends without further attempts. */
export class Fatal extends ActionFailed {}
/** The input cannot be processed: the task run ends without further attempts. */
export class InvalidInput extends ActionFailed {}

function tags(t) {
  if (!t) return [];
  return (Array.isArray(t) ? t : Object.entries(t)).map(([k, v]) => [String(k), String(v)]);
}

// A host call's `err`, as thrown by the bindings, becomes `Fatal`.
function hostCall(f) {
  try {
    return f();
  } catch (e) {
    throw new Fatal(String(e?.payload ?? e?.message ?? e));
  }
}

function json(value) {
  const text = JSON.stringify(value);
  if (text === undefined) throw new Fatal("the value does not serialize to JSON");
  return text;
}

export class Context {
  constructor(invocation) {
    this.executionId = invocation.executionId;
    this.taskId = invocation.taskId;
    this.step = invocation.step;
    this.attempt = invocation.attempt;
  }
  log(level, message) { host.log(level, String(message)); }
  trace(message) { host.log("trace", String(message)); }
  debug(message) { host.log("debug", String(message)); }
  info(message) { host.log("info", String(message)); }
  error(message) { host.log("error", String(message)); }
  /** Records a warning: the attempt ends WARNING if it succeeds. */
  warn(message) { host.warn(String(message)); }
  /** Sets output `name` to `value` (JSON); `Fatal` past the quota. */
  output(name, value) { hostCall(() => host.setOutput(name, json(value))); }
  counter(name, delta = 1, t = undefined) { host.counter(name, BigInt(Math.trunc(delta)), tags(t)); }
  duration(name, seconds, t = undefined) {
    host.duration(name, BigInt(Math.max(0, Math.round(seconds * 1e9))), tags(t));
  }
  /** Runs `f` and records how long it took as the duration `name`. */
  time(name, f, t = undefined) {
    const start = Date.now();
    const done = () => this.duration(name, (Date.now() - start) / 1000, t);
    let out;
    try {
      out = f();
    } catch (e) {
      done();
      throw e;
    }
    if (out && typeof out.then === "function") return out.finally(done);
    done();
    return out;
  }
  media(name, contentType, data) {
    const bytes = typeof data === "string" ? new TextEncoder().encode(data) : new Uint8Array(data);
    const r = hostCall(() => host.putMedia(name, contentType, bytes));
    return { id: r.id, url: r.url };
  }
  checkpoint(state) { hostCall(() => host.checkpoint(json(state))); }
  lastCheckpoint() {
    const text = host.lastCheckpoint();
    return text === undefined ? undefined : JSON.parse(text);
  }
  variable(name) { return host.getVariable(name); }
}

function failure(e) {
  if (e instanceof Retryable) return { tag: "retryable", val: e.message };
  if (e instanceof Fatal) return { tag: "fatal", val: e.message };
  if (e instanceof InvalidInput) return { tag: "invalid-input", val: e.message };
  const text = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack ?? ""}` : String(e);
  return { tag: "retryable", val: text.trim() };
}

/** Makes `f(ctx, input)` the component's `run`: export its result as `run`. */
export function action(f) {
  return async function run(invocation) {
    let input;
    try {
      input = invocation.input.trim() ? JSON.parse(invocation.input) : null;
    } catch (e) {
      throw { tag: "invalid-input", val: `input is not JSON: ${e.message}` };
    }
    let result;
    try {
      result = await f(new Context(invocation), input);
    } catch (e) {
      throw failure(e);
    }
    const text = JSON.stringify(result === undefined ? null : result);
    if (text === undefined) throw { tag: "fatal", val: "the result does not serialize to JSON" };
    return text;
  };
}
