//! The bindings that wit-bindgen generates for the `projection` world of `wit/0.1.0/plugin.wit`, used by
//! `evhost-sdk` (plugin authors use the SDK, not this crate).
//!
//! Every world exports the `meta` interface, and wit-bindgen names the public export macro of
//! an exported interface after the interface alone, at the root of the crate that generates it:
//! two worlds in one crate would define that macro twice. So each world that `evhost-sdk` does
//! not generate itself (it generates `handler`) has a crate of its own.
#![cfg(target_arch = "wasm32")]

/// The generated bindings; `evhost-sdk` re-exports this module as
/// `evhost_sdk::__private::bindings::projection`, the path the generated export macro names.
#[allow(clippy::too_many_arguments)] // in the generated code
pub mod bindings {
    wit_bindgen::generate!({
        world: "projection",
        path: "../../../../wit/0.1.0",
        pub_export_macro: true,
        default_bindings_module: "evhost_sdk::__private::bindings::projection",
    });
}
