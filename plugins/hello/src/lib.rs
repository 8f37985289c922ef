//! `hello`: greets someone. The README's example action.
//!
//! Input `{"name": "Ada"}` (default "world"); result `{"message": "Hello, Ada!"}`;
//! output `message`, counter `greetings`, duration `greet`.

use serde::{Deserialize, Serialize};
use ward_sdk::{Context, Error};

#[derive(Deserialize)]
#[serde(default)]
pub struct Input {
    pub name: String,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            name: "world".into(),
        }
    }
}

#[derive(Serialize, Debug, PartialEq)]
pub struct Greeting {
    pub message: String,
}

/// The greeting for `name`; an empty or overlong name is invalid input.
pub fn greeting(name: &str) -> Result<String, Error> {
    let name = name.trim();
    if name.is_empty() {
        return Err(Error::invalid_input("name must not be empty"));
    }
    if name.chars().count() > 100 {
        return Err(Error::invalid_input("name is longer than 100 characters"));
    }
    Ok(format!("Hello, {name}!"))
}

fn hello(ctx: &Context, input: Input) -> Result<Greeting, Error> {
    let _timer = ctx.timer("greet");
    let message = greeting(&input.name)?;
    ctx.info(format!("greeting {}", input.name.trim()));
    ctx.counter("greetings", 1);
    ctx.output("message", &message)?;
    Ok(Greeting { message })
}

ward_sdk::action!(hello);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        assert_eq!(greeting(" Ada ").unwrap(), "Hello, Ada!");
    }

    #[test]
    fn empty_name_is_invalid_input() {
        assert!(matches!(greeting("  "), Err(Error::InvalidInput(_))));
    }
}
