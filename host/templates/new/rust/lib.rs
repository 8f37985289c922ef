//! {{name}}: a Ward task action. Input `{"name": "Ada"}` → result
//! `{"message": "Hello, Ada!"}`, one log line, the counter `greetings`.

use serde::{Deserialize, Serialize};
use ward_sdk::{Context, Error};

#[derive(Deserialize)]
#[serde(default)]
struct Input {
    name: String,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            name: "world".into(),
        }
    }
}

#[derive(Serialize)]
struct Greeting {
    message: String,
}

fn hello(ctx: &Context, input: Input) -> Result<Greeting, Error> {
    let name = input.name.trim();
    if name.is_empty() {
        return Err(Error::invalid_input("name must not be empty"));
    }
    ctx.info(format!("greeting {name}"));
    ctx.counter("greetings", 1);
    Ok(Greeting {
        message: format!("Hello, {name}!"),
    })
}

ward_sdk::action!(hello);
