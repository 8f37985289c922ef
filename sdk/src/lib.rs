//! `ward-sdk`: write a Ward task action as an ordinary Rust function.
//!
//! A plugin depends on `ward-sdk` and `serde` only. It writes one function that
//! takes a [`Context`] and a typed input, returns a typed result, and exports it
//! with [`action!`]. The SDK turns that into a WebAssembly component of the
//! `ward:action` world (see `wit/action.wit`): it parses the input JSON, calls
//! the function, serializes the result and maps errors to `action-error`.
//!
//! # Example
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use ward_sdk::{Context, Error};
//!
//! #[derive(Deserialize)]
//! struct Input {
//!     name: String,
//! }
//!
//! #[derive(Serialize)]
//! struct Greeting {
//!     message: String,
//! }
//!
//! fn hello(ctx: &Context, input: Input) -> Result<Greeting, Error> {
//!     if input.name.is_empty() {
//!         return Err(Error::invalid_input("name must not be empty"));
//!     }
//!     let _timer = ctx.timer("greet"); // a duration metric, recorded on drop
//!     ctx.info(format!("greeting {}", input.name));
//!     ctx.counter("greetings", 1);
//!     let message = format!("Hello, {}!", input.name);
//!     ctx.output("message", &message)?;
//!     Ok(Greeting { message })
//! }
//!
//! ward_sdk::action!(hello);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and run it
//! locally with `ward run target/wasm32-wasip2/release/hello.wasm --input '{"name":"Ada"}'`.
//!
//! # Errors and `?`
//!
//! [`Error`] has the three cases of the WIT `action-error`:
//! [`Error::Retryable`] (another attempt may follow, under the task's retry
//! policy), [`Error::Fatal`] and [`Error::InvalidInput`] (the task run ends at
//! once). `?` on any ordinary error (anything that implements
//! [`std::error::Error`]) becomes **`Retryable`** with the error's message and
//! its sources, because an unexpected error is most often transient (a
//! network hiccup, a busy service) and the task's retry policy is the place
//! to decide how often to try again; tasks retry nothing by default. Use
//! [`ResultExt::fatal`] or [`ResultExt::invalid_input`] to say otherwise:
//!
//! ```no_run
//! # use ward_sdk::{Error, ResultExt};
//! # fn f(text: &str) -> Result<u32, Error> {
//! let n: u32 = text.parse().invalid_input()?;
//! # Ok(n) }
//! ```
//!
//! A panic is not an `action-error`: it traps, and the attempt ends `failed`
//! with kind `trap` and the tail of the guest's stderr (the panic message).

use std::borrow::Cow;
use std::fmt;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Bindings generated from `wit/action.wit`. Plugins do not need them
/// directly; they are public so that [`action!`] can reach them.
// The generated code names this crate by its absolute path, also from inside.
extern crate self as ward_sdk;

#[doc(hidden)]
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "action",
        pub_export_macro: true,
        export_macro_name: "__export_ward_action",
        default_bindings_module: "::ward_sdk::bindings",
        runtime_path: "::ward_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

use bindings::ward::action::host;
use bindings::ward::action::types::{self as wit, ActionError, Invocation};

/// Severity of a log line; see [`Context::log`].
pub use bindings::ward::action::types::Level;

/// A stored media object: its id and the URL it is served at. Serializes
/// as `{"id": …, "url": …}`, so it can go straight into a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MediaRef {
    /// The object's id.
    pub id: String,
    /// Where the object can be fetched.
    pub url: String,
}

/// How an action failed. The case decides whether Ward tries again.
///
/// `?` converts any [`std::error::Error`] into [`Error::Retryable`]; see the
/// crate docs for why, and [`ResultExt`] to choose another case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A transient failure: another attempt runs under the task's retry policy.
    Retryable(String),
    /// A permanent failure: the task run ends without further attempts.
    Fatal(String),
    /// The input cannot be processed: the task run ends without further attempts.
    InvalidInput(String),
}

impl Error {
    /// A transient failure; the task's retry policy may run another attempt.
    pub fn retryable(message: impl Into<String>) -> Self {
        Error::Retryable(message.into())
    }

    /// A permanent failure; no further attempt runs.
    pub fn fatal(message: impl Into<String>) -> Self {
        Error::Fatal(message.into())
    }

    /// The input is unusable; no further attempt runs.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// The message, whatever the case.
    pub fn message(&self) -> &str {
        match self {
            Error::Retryable(m) | Error::Fatal(m) | Error::InvalidInput(m) => m,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self {
            Error::Retryable(_) => "retryable",
            Error::Fatal(_) => "fatal",
            Error::InvalidInput(_) => "invalid input",
        };
        write!(f, "{kind}: {}", self.message())
    }
}

/// Any ordinary error becomes [`Error::Retryable`], with its chain of sources.
impl<E: std::error::Error> From<E> for Error {
    fn from(err: E) -> Self {
        Error::Retryable(error_chain(&err))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

impl From<Error> for ActionError {
    fn from(err: Error) -> Self {
        match err {
            Error::Retryable(m) => ActionError::Retryable(m),
            Error::Fatal(m) => ActionError::Fatal(m),
            Error::InvalidInput(m) => ActionError::InvalidInput(m),
        }
    }
}

/// Chooses the [`Error`] case for a `Result` before `?`.
pub trait ResultExt<T> {
    /// On error, [`Error::Fatal`] with the error's message.
    fn fatal(self) -> Result<T, Error>;
    /// On error, [`Error::InvalidInput`] with the error's message.
    fn invalid_input(self) -> Result<T, Error>;
    /// On error, [`Error::Retryable`] with the error's message (what `?` does).
    fn retryable(self) -> Result<T, Error>;
}

impl<T, E: std::error::Error> ResultExt<T> for Result<T, E> {
    fn fatal(self) -> Result<T, Error> {
        self.map_err(|e| Error::Fatal(error_chain(&e)))
    }
    fn invalid_input(self) -> Result<T, Error> {
        self.map_err(|e| Error::InvalidInput(error_chain(&e)))
    }
    fn retryable(self) -> Result<T, Error> {
        self.map_err(|e| Error::Retryable(error_chain(&e)))
    }
}

/// Metric tags: `(key, value)` pairs.
pub type Tags<'a> = &'a [(&'a str, &'a str)];

fn owned_tags(tags: Tags<'_>) -> Vec<(String, String)> {
    tags.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What an attempt knows about itself, and its way to talk to the host.
pub struct Context {
    execution_id: String,
    task_id: String,
    step: String,
    attempt: u32,
}

impl Context {
    /// The execution's id (a UUID).
    pub fn execution_id(&self) -> &str {
        &self.execution_id
    }

    /// The task's id.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The step this task run belongs to (`"main"` for a one-action task).
    pub fn step(&self) -> &str {
        &self.step
    }

    /// This attempt's number, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Writes a log line at `level`.
    pub fn log(&self, level: Level, message: impl AsRef<str>) {
        host::log(level, message.as_ref());
    }

    /// Writes a `trace` log line.
    pub fn trace(&self, message: impl AsRef<str>) {
        self.log(Level::Trace, message);
    }

    /// Writes a `debug` log line.
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(Level::Debug, message);
    }

    /// Writes an `info` log line.
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(Level::Info, message);
    }

    /// Writes an `error` log line. This does not fail the attempt: return
    /// an [`Error`] for that.
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(Level::Error, message);
    }

    /// Records a warning: the attempt ends `warning` instead of `success`.
    /// (For a mere log line at warn level, use `log(Level::Warn, …)`.)
    pub fn warn(&self, message: impl AsRef<str>) {
        host::warn(message.as_ref());
    }

    /// Sets the output `name` to `value`, serialized as JSON. Fails when the
    /// name is invalid or the value is over the output quota.
    pub fn output<T: Serialize + ?Sized>(&self, name: &str, value: &T) -> Result<(), Error> {
        let json = serde_json::to_string(value).fatal()?;
        host::set_output(name, &json).map_err(Error::Fatal)
    }

    /// Adds `delta` to the counter `name`.
    pub fn counter(&self, name: &str, delta: i64) {
        host::counter(name, delta, &[]);
    }

    /// Adds `delta` to the counter `name` with `tags`.
    pub fn counter_with(&self, name: &str, delta: i64, tags: Tags<'_>) {
        host::counter(name, delta, &owned_tags(tags));
    }

    /// Records one observation of `elapsed` in the duration metric `name`.
    pub fn duration(&self, name: &str, elapsed: Duration, tags: Tags<'_>) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        host::duration(name, nanos, &owned_tags(tags));
    }

    /// Starts a timer that records a duration metric `name` when dropped.
    pub fn timer(&self, name: &str) -> Timer {
        Timer {
            name: name.to_string(),
            tags: Vec::new(),
            start: Instant::now(),
        }
    }

    /// Stores a media object (`name` is a file name, `content_type` a MIME type).
    pub fn media(&self, name: &str, content_type: &str, data: &[u8]) -> Result<MediaRef, Error> {
        host::put_media(name, content_type, data)
            .map(|r: wit::MediaRef| MediaRef {
                id: r.id,
                url: r.url,
            })
            .map_err(Error::Fatal)
    }

    /// Durably records `state` for this task run; a later attempt reads it
    /// back with [`Context::last_checkpoint`].
    pub fn checkpoint<T: Serialize + ?Sized>(&self, state: &T) -> Result<(), Error> {
        let json = serde_json::to_string(state).fatal()?;
        host::checkpoint(&json).map_err(Error::Fatal)
    }

    /// The last checkpoint of this task run, if any, parsed as `T`.
    pub fn last_checkpoint<T: DeserializeOwned>(&self) -> Result<Option<T>, Error> {
        match host::last_checkpoint() {
            None => Ok(None),
            Some(json) => serde_json::from_str(&json)
                .map(Some)
                .map_err(|e| Error::Fatal(format!("checkpoint does not parse: {e}"))),
        }
    }

    /// A variable the task grants, or `None`.
    pub fn variable(&self, name: &str) -> Option<String> {
        host::get_variable(name)
    }
}

/// Measures from its creation to its drop, then records a duration metric.
#[must_use = "a timer records when dropped; bind it to a variable like `_timer`"]
pub struct Timer {
    name: String,
    tags: Vec<(String, String)>,
    start: Instant,
}

impl Timer {
    /// Adds a tag to the recorded series.
    pub fn tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.to_string(), value.to_string()));
        self
    }

    /// Time since the timer started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let nanos = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        host::duration(&self.name, nanos, &self.tags);
    }
}

/// Parses the input, calls the action, serializes its result. Used by
/// [`action!`]; not meant to be called directly.
#[doc(hidden)]
pub fn __run<I, O, F>(invocation: Invocation, action: F) -> Result<String, ActionError>
where
    I: DeserializeOwned,
    O: Serialize,
    F: FnOnce(&Context, I) -> Result<O, Error>,
{
    let input = parse_input::<I>(&invocation.input).map_err(ActionError::InvalidInput)?;
    // The raw text can be large (an image in base64): free it before the action runs.
    drop(invocation.input);
    let ctx = Context {
        execution_id: invocation.execution_id,
        task_id: invocation.task_id,
        step: invocation.step,
        attempt: invocation.attempt,
    };
    let output = action(&ctx, input).map_err(ActionError::from)?;
    serde_json::to_string(&output)
        .map_err(|e| ActionError::Fatal(format!("result does not serialize to JSON: {e}")))
}

/// An absent input arrives as `{}` or `null`; accept either for an input
/// type that takes the other (`()` wants `null`, a struct of defaults `{}`).
fn parse_input<I: DeserializeOwned>(text: &str) -> Result<I, String> {
    let text = if text.trim().is_empty() { "null" } else { text };
    match serde_json::from_str(text) {
        Ok(v) => Ok(v),
        Err(first) => {
            let alternative: Option<Cow<'static, str>> = match text.trim() {
                "null" => Some("{}".into()),
                "{}" => Some("null".into()),
                _ => None,
            };
            alternative
                .and_then(|alt| serde_json::from_str(&alt).ok())
                .ok_or_else(|| format!("input does not match the expected shape: {first}"))
        }
    }
}

/// Exports a function as the component's `run`.
///
/// The function has the shape `fn(&Context, I) -> Result<O, Error>` where `I`
/// implements `Deserialize` (the input JSON) and `O` implements `Serialize`
/// (the result JSON). Use it once per plugin crate, at the top level:
///
/// ```ignore
/// ward_sdk::action!(my_action);
/// ```
#[macro_export]
macro_rules! action {
    ($action:path) => {
        #[doc(hidden)]
        struct __WardAction;

        impl $crate::bindings::Guest for __WardAction {
            fn run(
                invocation: $crate::bindings::ward::action::types::Invocation,
            ) -> ::core::result::Result<
                ::std::string::String,
                $crate::bindings::ward::action::types::ActionError,
            > {
                $crate::__run(invocation, $action)
            }
        }

        $crate::bindings::__export_ward_action!(__WardAction);
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Deserialize, Debug, PartialEq, Default)]
    #[serde(default)]
    struct Defaults {
        n: u32,
    }

    #[test]
    fn empty_input_fits_unit_and_defaulted_structs() {
        assert_eq!(parse_input::<()>("{}"), Ok(()));
        assert_eq!(parse_input::<()>(""), Ok(()));
        assert_eq!(parse_input::<Defaults>("null"), Ok(Defaults { n: 0 }));
        assert_eq!(parse_input::<Defaults>(r#"{"n":3}"#), Ok(Defaults { n: 3 }));
    }

    #[test]
    fn mismatched_input_is_reported() {
        let err = parse_input::<Defaults>(r#"{"n":"x"}"#).unwrap_err();
        assert!(err.contains("expected shape"), "{err}");
    }

    #[test]
    fn question_mark_on_an_ordinary_error_is_retryable() {
        fn parse(s: &str) -> Result<u32, Error> {
            Ok(s.parse::<u32>()?)
        }
        assert!(matches!(parse("x"), Err(Error::Retryable(_))));
        assert!(matches!(
            "x".parse::<u32>().fatal(),
            Err(Error::Fatal(m)) if m.contains("invalid digit")
        ));
        assert!(matches!(
            "x".parse::<u32>().invalid_input(),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn errors_map_to_their_wit_case() {
        assert!(matches!(
            ActionError::from(Error::fatal("f")),
            ActionError::Fatal(m) if m == "f"
        ));
        assert!(matches!(
            ActionError::from(Error::invalid_input("i")),
            ActionError::InvalidInput(_)
        ));
        assert!(matches!(
            ActionError::from(Error::retryable("r")),
            ActionError::Retryable(_)
        ));
    }
}
