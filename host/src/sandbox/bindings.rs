//! Host bindings generated from `wit/action.wit`, in one place.
//!
//! `checkpoint` is async so that the service can commit the state to its
//! store before the guest is told it is saved; everything else is a plain
//! synchronous call into in-memory state (or a local file write for media).

wasmtime::component::bindgen!({
    path: "../wit",
    world: "action",
    imports: {
        "ward:action/host.checkpoint": async,
        default: tracing,
    },
    exports: { default: async },
});

pub use self::ward::action::host::Host;
pub use self::ward::action::types::{Level, MediaRef};
