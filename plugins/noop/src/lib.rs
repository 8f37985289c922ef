//! `noop`: returns `null` at once, whatever its input. The component Ward's
//! benchmarks run, so that they measure the attempt path and nothing else;
//! any input is accepted (and skipped, not built) so that it can stand for
//! any step of a flow.

use serde::de::IgnoredAny;
use ward_sdk::{Context, Error};

fn noop(_ctx: &Context, _input: IgnoredAny) -> Result<(), Error> {
    Ok(())
}

ward_sdk::action!(noop);
