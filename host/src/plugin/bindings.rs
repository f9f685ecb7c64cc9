//! The one `bindgen!` of the host (HOUSE_STYLE: Spin `crates/world`). DNS lookups are async
//! host functions on the server's runtime; exports are called asynchronously so that epoch
//! deadlines and tokio timeouts both apply.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "plugin",
    imports: {
        "wasmtp:plugin/dns": async | trappable,
        "wasmtp:plugin/kv": async | trappable,
        "wasmtp:plugin/store": async | trappable,
        "wasmtp:plugin/edit": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    // The authentication results of a message waiting for its after-queue scan are kept
    // in the spool as JSON.
    additional_derives: [serde::Serialize, serde::Deserialize],
    with: {
        "wasmtp:plugin/message.message": super::message::MessageData,
    },
});

pub use self::wasmtp::plugin::types;

/// The version of the WIT package the host implements.
pub const CONTRACT_VERSION: &str = "0.2.3";
/// Components built for any `0.2.x` load: 0.2 releases only add.
const COMPATIBLE: &str = "0.2.";

/// `wasmtp:plugin@VERSION` when the component was built against a version of the contract
/// that is not ours nor compatible with it (its imports and exports name the package with
/// their version).
pub fn other_contract(
    component: &wasmtime::component::Component,
    engine: &wasmtime::Engine,
) -> Option<String> {
    let ty = component.component_type();
    let names = ty
        .imports(engine)
        .map(|(n, _)| n)
        .chain(ty.exports(engine).map(|(n, _)| n));
    names
        .filter_map(|n| n.strip_prefix("wasmtp:plugin/"))
        .filter_map(|n| n.split_once('@').map(|(_, v)| v))
        .find(|v| !v.starts_with(COMPATIBLE))
        .map(|v| format!("wasmtp:plugin@{v}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn contract_version_is_the_wit_package_version() {
        let wit = include_str!("../../../wit/plugin.wit");
        let package = format!("package wasmtp:plugin@{};", super::CONTRACT_VERSION);
        assert!(wit.contains(&package), "{package} is not in wit/plugin.wit");
    }
}
