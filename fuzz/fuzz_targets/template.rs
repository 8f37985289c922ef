//! Any template text against any context: rendering ends (templates run on
//! fuel) with a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // The first line is the template, the rest (if JSON) the input.
    let (template, rest) = text.split_once('\n').unwrap_or((&text, ""));
    let input: Value = serde_json::from_str(rest).unwrap_or(Value::Null);
    let ctx = json!({"input": input, "steps": {"a": {"outputs": {"x": [1, 2, 3]}}}, "vars": {}});
    let _ = ward::model::flow::render("fuzz", &Value::String(template.to_string()), &ctx);
    let _ = ward::model::flow::render("fuzz", &json!({"k": [template]}), &ctx);
    let _ = ward::model::flow::condition("fuzz", template, &ctx);
    let _ = ward::model::flow::reads_of(&[&Value::String(template.to_string())]);
});
