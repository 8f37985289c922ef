//! `noop`: returns `null` at once. The component Ward's benchmarks run, so
//! that they measure the attempt path and nothing else.

use ward_sdk::{Context, Error};

fn noop(_ctx: &Context, _input: ()) -> Result<(), Error> {
    Ok(())
}

ward_sdk::action!(noop);
