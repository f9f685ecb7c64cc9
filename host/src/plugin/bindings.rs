//! The one `bindgen!` of the host (HOUSE_STYLE: Spin `crates/world`). DNS lookups are async
//! host functions on the server's runtime; exports are called asynchronously so that epoch
//! deadlines and tokio timeouts both apply.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "wasmtp:plugin/dns": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    with: {
        "wasmtp:plugin/message.message": super::message::MessageData,
    },
});

pub use self::wasmtp::plugin::types;
