//! Any bytes as a task definition: parsing and checking never panic, and
//! a definition that parses and has no problems round-trips through JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward::model::task::{TaskBounds, TaskSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(spec) = serde_json::from_slice::<TaskSpec>(data) else {
        return;
    };
    let problems = spec.problems(&TaskBounds::default());
    if problems.is_empty() {
        let text = serde_json::to_string(&spec).expect("a valid spec serializes");
        let again: TaskSpec = serde_json::from_str(&text).expect("and parses again");
        assert_eq!(again.problems(&TaskBounds::default()), Vec::<String>::new());
    }
    let _ = spec.without_secrets();
});
