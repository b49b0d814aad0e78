//! The checks an uploaded component passes before it becomes a plugin: the bytes are a
//! component (not a core module, not anything else), it imports only what plugins are granted,
//! its exports are those of a known world, and what `describe` says fits that world.

use wasmtime::Engine;
use wasmtime::component::Component;

use super::bindings::package_version;
use super::{InvalidPlugin, PluginInfo, PluginKind};

/// The interfaces a plugin may import, by name without version. WASI's command-line,
/// I/O, clock and random interfaces are granted because every guest toolchain's standard library
/// imports them; the host backs them with an empty context (no arguments, no environment, no
/// input, a frozen clock, seeded randomness). Filesystems, sockets and HTTP are never granted.
const GRANTED_IMPORTS: &[&str] = &[
    "evhost:plugin/types",
    "evhost:plugin/log",
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

/// The host interface that only projections and policies may import.
const STATE_IMPORT: &str = "evhost:plugin/state";

/// The exports that tell the worlds apart, besides `meta` which all of them have.
const WORLD_EXPORTS: &[(PluginKind, &[&str])] = &[
    (PluginKind::Handler, &["evolve", "decide"]),
    (PluginKind::Projection, &["apply", "query"]),
    (PluginKind::Policy, &["react", "on-timer", "on-rejected"]),
];

/// Refuses bytes that are not a WebAssembly component, saying what they are instead.
pub(super) fn check_header(wasm: &[u8]) -> Result<(), InvalidPlugin> {
    const MAGIC: &[u8] = b"\0asm";
    const CORE_VERSION: [u8; 4] = [1, 0, 0, 0];
    if wasm.is_empty() {
        return Err(InvalidPlugin(
            "the upload is empty; expected a WebAssembly component".into(),
        ));
    }
    if wasm.len() < 8 || &wasm[..4] != MAGIC {
        return Err(InvalidPlugin(
            "the upload is not WebAssembly (it does not start with \\0asm); expected a component"
                .into(),
        ));
    }
    if wasm[4..8] == CORE_VERSION {
        return Err(InvalidPlugin(
            "the upload is a core WebAssembly module, not a component; build the plugin for \
             the wasm32-wasip2 target (or wrap the module with `wasm-tools component new`)"
                .into(),
        ));
    }
    // A component's preamble is a version of 0x0d (for now) and a layer of 1.
    if wasm[6..8] != [1, 0] {
        return Err(InvalidPlugin(format!(
            "the upload is WebAssembly of an unknown kind (version bytes {:02x?}); expected a \
             component",
            &wasm[4..8]
        )));
    }
    Ok(())
}

/// Refuses a component that imports anything beyond [`GRANTED_IMPORTS`], or `state` when
/// its world has none (a handler's state is its stream).
pub(super) fn check_imports(
    engine: &Engine,
    component: &Component,
    world: PluginKind,
) -> Result<(), InvalidPlugin> {
    let component_type = component.component_type();
    let forbidden: Vec<String> = component_type
        .imports(engine)
        .map(|(name, _)| name)
        .filter(|name| !is_granted(name, world))
        .map(str::to_owned)
        .collect();
    if forbidden.is_empty() {
        return Ok(());
    }
    Err(InvalidPlugin(format!(
        "the component imports {}, which a {world} is not granted; a plugin may import only \
         evhost:plugin/log (and evhost:plugin/state, for projections and policies) and WASI's \
         cli, io, clocks and random interfaces (no filesystem, sockets or HTTP)",
        forbidden.join(", ")
    )))
}

fn is_granted(import: &str, world: PluginKind) -> bool {
    let (interface, version) = import.split_once('@').unwrap_or((import, ""));
    let granted = GRANTED_IMPORTS.contains(&interface)
        || (interface == STATE_IMPORT && world != PluginKind::Handler);
    granted && (!interface.starts_with("evhost:") || version == package_version())
}

/// Which world the component's exports are those of.
pub(super) fn world_of(
    engine: &Engine,
    component: &Component,
) -> Result<PluginKind, InvalidPlugin> {
    let component_type = component.component_type();
    let exports: Vec<&str> = component_type
        .exports(engine)
        .map(|(name, _)| name)
        .collect();
    let version = package_version();
    let meta = format!("evhost:plugin/meta@{version}");
    let known = WORLD_EXPORTS
        .iter()
        .find(|(_, names)| names.iter().all(|name| exports.contains(name)));
    match known {
        Some((kind, _)) if exports.contains(&meta.as_str()) => Ok(*kind),
        _ => Err(InvalidPlugin(format!(
            "the component exports [{}], which is not a world of evhost:plugin@{version}: \
             a handler exports {meta}, evolve and decide; a projection {meta}, apply and query; \
             a policy {meta}, react, on-timer and on-rejected",
            exports.join(", ")
        ))),
    }
}

/// A plugin name: 1 to 64 characters from `[a-z0-9-]`, starting with a letter, so that it
/// reads well in URLs and logs.
fn validate_plugin_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "plugin name {name:?} is not 1 to 64 characters from [a-z0-9-] starting with a letter"
        ))
    }
}

/// Checks what `describe` said against the component's world.
pub(super) fn check_info(info: &PluginInfo, world: PluginKind) -> Result<(), InvalidPlugin> {
    validate_plugin_name(&info.name).map_err(|e| InvalidPlugin(format!("describe: {e}")))?;
    if info.kind != world {
        return Err(InvalidPlugin(format!(
            "describe says plugin {} is a {}, but the component implements world {world}",
            info.name, info.kind
        )));
    }
    if world == PluginKind::Handler {
        let Some(category) = &info.category else {
            return Err(InvalidPlugin(format!(
                "describe names no category for handler {}; a handler owns one category",
                info.name
            )));
        };
        let valid = !category.is_empty()
            && category.len() <= 128
            && !category.contains('-')
            && !category.chars().any(char::is_control);
        if !valid {
            return Err(InvalidPlugin(format!(
                "describe names category {category:?} for handler {}; a category is 1 to 128 \
                 bytes without `-` or control characters",
                info.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_told_apart() {
        let reason = |bytes: &[u8]| check_header(bytes).unwrap_err().0;
        assert!(reason(b"").contains("empty"));
        assert!(reason(b"hello world!").contains("not WebAssembly"));
        assert!(reason(b"\0asm\x01\0\0\0").contains("core WebAssembly module"));
        assert!(reason(b"\0asm\x0d\0\x02\0").contains("unknown kind"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }

    #[test]
    fn only_granted_interfaces_pass() {
        use PluginKind::{Handler, Policy, Projection};
        assert!(is_granted("wasi:cli/stdout@0.2.6", Handler));
        assert!(is_granted("evhost:plugin/log@0.1.0", Handler));
        assert!(!is_granted("evhost:plugin/log@0.2.0", Handler));
        assert!(!is_granted("evhost:plugin/state@0.1.0", Handler));
        assert!(is_granted("evhost:plugin/state@0.1.0", Projection));
        assert!(is_granted("evhost:plugin/state@0.1.0", Policy));
        for world in [Handler, Projection, Policy] {
            assert!(!is_granted("wasi:filesystem/types@0.2.6", world));
            assert!(!is_granted("wasi:sockets/tcp@0.2.6", world));
            assert!(!is_granted("wasi:http/outgoing-handler@0.2.6", world));
        }
    }

    #[test]
    fn plugin_names() {
        assert!(validate_plugin_name("visit").is_ok());
        assert!(validate_plugin_name("visit-2").is_ok());
        assert!(validate_plugin_name("").is_err());
        assert!(validate_plugin_name("Visit").is_err());
        assert!(validate_plugin_name("2visit").is_err());
        assert!(validate_plugin_name("visit/x").is_err());
        assert!(validate_plugin_name(&"a".repeat(65)).is_err());
    }
}
