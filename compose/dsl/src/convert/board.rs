//! Board maps to [`Board`]s: target, toolchain, kernel and bootloader
//! sections, partitions, OS identity, QEMU settings, config.json, packages.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_model::{
    Board, BootloaderConfig, Diagnostic, KernelConfig, OsRelease, PartitionLayout, QemuConfig,
    Source, Span, Target, Toolchain,
};
use rhai::{Dynamic, Map};

use super::fields::{sub_fields, type_name, Fields};
use crate::locate::{Locator, Seg};

pub const BOARD_FIELDS: &[&str] = &[
    "name",
    "description",
    "target",
    "toolchain",
    "kernel",
    "bootloader",
    "partitions",
    "os",
    "qemu",
    "config_json",
    "packages",
    "overrides",
];
const OS_FIELDS: &[&str] = &["id", "name", "version"];
const QEMU_FIELDS: &[&str] = &[
    "binary",
    "machine",
    "cpu",
    "memory_mib",
    "firmware",
    "drive",
    "net",
    "args",
];
const TARGET_FIELDS: &[&str] = &["arch", "triple", "rust_triple", "cpu_flags"];
const TOOLCHAIN_FIELDS: &[&str] = &[
    "name",
    "cc",
    "cxx",
    "ar",
    "ld",
    "nm",
    "objcopy",
    "ranlib",
    "strip",
    "rustc",
    "cargo",
    "rust_linker",
    "host_paths",
    "usr",
    "build_deps",
    "sysroot",
    "env",
];
const KERNEL_FIELDS: &[&str] = &["recipe", "base", "fragments"];
/// Where a board's kernel fragments land below `/build/src`.
pub const KCONFIG_DIR: &str = "kiln-kconfig";
const BOOTLOADER_FIELDS: &[&str] = &["recipe", "config"];
const PARTITION_FIELDS: &[&str] = &[
    "table",
    "gap_mib",
    "align_mib",
    "boot_mib",
    "root_mib",
    "state_mib",
    "data_mib",
    "disk_mib",
];

pub const ARCHES: &[&str] = &["aarch64", "x86_64"];

/// Reads a board's `target` section; it's needed before recipes can be evaluated.
pub fn target(map: &Map, loc: &Locator) -> Result<Target, Vec<Diagnostic>> {
    let mut f = Fields::new(map, Vec::new(), loc, "board", BOARD_FIELDS);
    f.errors.clear(); // unknown board fields are reported by `board()`
    let Some(t) = f.map("target") else {
        if f.errors.is_empty() {
            f.missing("target", "`#{ arch, triple, rust_triple, cpu_flags }`");
        }
        return Err(f.errors);
    };
    let mut s = sub_fields(&f, &f.sub("target"), &t, "target", TARGET_FIELDS);
    let arch = s.req_string("arch");
    if !arch.is_empty() && !ARCHES.contains(&arch.as_str()) {
        let p = s.sub("arch");
        s.error(
            &p,
            format!("unsupported arch `{arch}`"),
            format!("Kiln builds for: {}", ARCHES.join(", ")),
        );
    }
    let triple = s.req_string("triple");
    let rust_triple = s.req_string("rust_triple");
    let cpu_flags = s.strings("cpu_flags").into_iter().map(|(s, _)| s).collect();
    if s.errors.is_empty() {
        Ok(Target {
            arch,
            triple,
            rust_triple,
            cpu_flags,
        })
    } else {
        Err(s.errors)
    }
}

/// Converts a board map (without its overrides, which apply to recipes).
///
/// `board_dir` is the board file's directory: kernel fragments are read
/// from it (and only from it).
pub fn board(
    map: &Map,
    loc: &Locator,
    target: Target,
    board_dir: &Path,
) -> Result<Board, Vec<Diagnostic>> {
    let mut f = Fields::new(map, Vec::new(), loc, "board", BOARD_FIELDS);
    let name = f.req_string("name");
    let description = f.opt_string("description");
    let toolchain = match f.map("toolchain") {
        Some(t) => {
            let mut s = sub_fields(&f, &f.sub("toolchain"), &t, "toolchain", TOOLCHAIN_FIELDS);
            let tc = toolchain(&mut s);
            f.errors.append(&mut s.errors);
            tc
        }
        None => {
            if f.errors.is_empty() {
                f.missing(
                    "toolchain",
                    "a toolchain map, e.g. `tc::gnu(\"aarch64-linux-gnu\", ...)`",
                );
            }
            None
        }
    };
    let kernel = f.map("kernel").map(|k| {
        let path = f.sub("kernel");
        let mut s = sub_fields(&f, &path, &k, "kernel", KERNEL_FIELDS);
        let recipe = s.req_string("recipe");
        let base = s.req_string("base");
        let span = s.locator().key(&s.sub("recipe"));
        let mut fragments = Vec::new();
        let mut sources = Vec::new();
        for (i, (file, fspan)) in s.strings("fragments").into_iter().enumerate() {
            if let Some(blake3) = fragment_hash(&mut s, &file, board_dir, &fspan) {
                let name = Path::new(&file)
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .unwrap_or_default();
                sources.push(Source::Local {
                    path: file.clone(),
                    blake3,
                    dest: format!("{KCONFIG_DIR}/{i:02}-{name}"),
                    span: fspan,
                    base: Some(board_dir.to_path_buf()),
                });
            }
            fragments.push(file);
        }
        f.errors.append(&mut s.errors);
        KernelConfig {
            recipe,
            base,
            fragments,
            sources,
            span,
        }
    });
    let bootloader = f.map("bootloader").map(|b| {
        let path = f.sub("bootloader");
        let mut s = sub_fields(&f, &path, &b, "bootloader", BOOTLOADER_FIELDS);
        let bc = BootloaderConfig {
            recipe: s.req_string("recipe"),
            config: s.req_string("config"),
            span: s.locator().key(&s.sub("recipe")),
        };
        f.errors.append(&mut s.errors);
        bc
    });
    let partitions = match f.map("partitions") {
        Some(p) => {
            let mut s = sub_fields(&f, &f.sub("partitions"), &p, "partitions", PARTITION_FIELDS);
            let mib = |s: &mut Fields, k: &str| s.int(k, 0, 1 << 30).map(|v| v as u64);
            let table = s.string("table");
            if let Some(t) = table.as_deref().filter(|t| *t != "mbr" && *t != "gpt") {
                let path = s.sub("table");
                s.error(
                    &path,
                    format!("partition table `{t}` is not supported"),
                    "use \"mbr\" or \"gpt\"",
                );
            }
            let layout = PartitionLayout {
                table,
                gap_mib: mib(&mut s, "gap_mib"),
                align_mib: mib(&mut s, "align_mib"),
                boot_mib: mib(&mut s, "boot_mib"),
                root_mib: mib(&mut s, "root_mib"),
                state_mib: mib(&mut s, "state_mib"),
                data_mib: mib(&mut s, "data_mib"),
                disk_mib: mib(&mut s, "disk_mib"),
            };
            f.errors.append(&mut s.errors);
            layout
        }
        None => PartitionLayout::default(),
    };
    let os = match f.map("os") {
        Some(m) => {
            let mut s = sub_fields(&f, &f.sub("os"), &m, "os", OS_FIELDS);
            let d = OsRelease::default();
            let os = OsRelease {
                id: s.string("id").unwrap_or(d.id),
                name: s.string("name").unwrap_or(d.name),
                version: s.string("version").unwrap_or(d.version),
            };
            let id_ok = !os.id.is_empty()
                && os
                    .id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
            if !id_ok {
                let p = s.sub("id");
                s.error(
                    &p,
                    format!("os id `{}` is not a valid os-release ID", os.id),
                    "use lower case letters, digits, `.`, `_` and `-` (e.g. \"kiln\")",
                );
            }
            f.errors.append(&mut s.errors);
            os
        }
        None => OsRelease::default(),
    };
    let qemu = f.map("qemu").map(|m| {
        let mut s = sub_fields(&f, &f.sub("qemu"), &m, "qemu", QEMU_FIELDS);
        let q = QemuConfig {
            binary: s.req_string("binary"),
            machine: s.req_string("machine"),
            cpu: s.opt_string("cpu"),
            memory_mib: s.int("memory_mib", 16, 1 << 20).unwrap_or(512) as u64,
            firmware: s.opt_string("firmware"),
            drive: s.string("drive").unwrap_or_else(|| "virtio".into()),
            net: s.string("net").unwrap_or_else(|| "virtio-net-pci".into()),
            args: s.strings("args").into_iter().map(|(a, _)| a).collect(),
        };
        f.errors.append(&mut s.errors);
        q
    });
    let config_json = match f.map("config_json") {
        Some(m) => {
            let path = f.sub("config_json");
            match json_of(&Dynamic::from_map(m)) {
                Ok(serde_json::Value::Object(o)) => o,
                Ok(_) => serde_json::Map::new(),
                Err(what) => {
                    f.error(
                        &path,
                        format!("config_json: {what}"),
                        "config.json values are strings, integers, booleans, arrays and maps",
                    );
                    serde_json::Map::new()
                }
            }
        }
        None => serde_json::Map::new(),
    };
    let mut packages = Vec::new();
    let mut package_spans = BTreeMap::new();
    for (p, span) in f.strings("packages") {
        if package_spans.contains_key(&p) {
            f.errors.push(
                Diagnostic::new(span, format!("package `{p}` is listed twice"))
                    .help("remove one of them"),
            );
        } else {
            package_spans.insert(p.clone(), span);
            packages.push(p);
        }
    }
    // Overrides are applied to the recipes by `dsl::evaluate`; here we only
    // check that they are a map (`map()` reports any other type).
    let _ = f.map("overrides");
    match (f.errors.is_empty(), toolchain) {
        (true, Some(toolchain)) => Ok(Board {
            name,
            description,
            target,
            toolchain,
            kernel,
            bootloader,
            partitions,
            os,
            qemu,
            config_json,
            packages,
            package_spans,
            overrides: Vec::new(),
            span: loc.top(),
        }),
        _ => Err(f.errors),
    }
}

/// A Rhai value as JSON (for `config_json`); the error names the first
/// value that has no JSON form.
fn json_of(v: &Dynamic) -> Result<serde_json::Value, String> {
    use serde_json::Value;
    if v.is_unit() {
        return Ok(Value::Null);
    }
    if let Ok(b) = v.as_bool() {
        return Ok(Value::Bool(b));
    }
    if let Ok(i) = v.as_int() {
        return Ok(Value::from(i));
    }
    if let Ok(s) = v.clone().into_immutable_string() {
        return Ok(Value::String(s.to_string()));
    }
    if let Some(a) = v.read_lock::<rhai::Array>() {
        return a
            .iter()
            .map(json_of)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    if let Some(m) = v.read_lock::<Map>() {
        let mut o = serde_json::Map::new();
        for (k, v) in m.iter() {
            o.insert(
                k.to_string(),
                json_of(v).map_err(|e| format!("`{k}`: {e}"))?,
            );
        }
        return Ok(Value::Object(o));
    }
    Err(format!("{} has no JSON form", type_name(v)))
}

/// Hashes a kernel fragment, which must be a plain relative path inside
/// the board's directory: a board can't pull files from anywhere else.
fn fragment_hash(f: &mut Fields, file: &str, board_dir: &Path, span: &Span) -> Option<String> {
    let shown = Path::new("boards").join(file);
    let full = match crate::engine::recipe_file(board_dir, file) {
        Ok(p) => p,
        Err(_) => {
            f.errors.push(
                Diagnostic::new(
                    span.clone(),
                    format!("kernel config fragment `{file}` is outside the boards directory"),
                )
                .help("name fragments relative to boards/, without `..` or a leading `/`"),
            );
            return None;
        }
    };
    if !full.is_file() {
        f.errors.push(
            Diagnostic::new(
                span.clone(),
                format!(
                    "kernel config fragment `{file}` not found ({} does not exist)",
                    shown.display()
                ),
            )
            .help("fragments are relative to boards/; create the file or fix the name"),
        );
        return None;
    }
    match crate::content::path_blake3(&full) {
        Ok(h) => Some(h.to_hex().to_string()),
        Err(e) => {
            f.errors.push(
                Diagnostic::new(
                    span.clone(),
                    format!("cannot read {}: {e}", shown.display()),
                )
                .help("check the file's permissions"),
            );
            None
        }
    }
}

fn toolchain(s: &mut Fields) -> Option<Toolchain> {
    let tc = Toolchain {
        name: s.req_string("name"),
        cc: s.req_string("cc"),
        cxx: s.req_string("cxx"),
        ar: s.req_string("ar"),
        ld: s.req_string("ld"),
        nm: s.req_string("nm"),
        objcopy: s.req_string("objcopy"),
        ranlib: s.req_string("ranlib"),
        strip: s.req_string("strip"),
        rustc: s.req_string("rustc"),
        cargo: s.req_string("cargo"),
        rust_linker: s.req_string("rust_linker"),
        host_paths: s
            .strings("host_paths")
            .into_iter()
            .map(|(p, _)| p.into())
            .collect(),
        usr: s.string("usr"),
        build_deps: s
            .strings("build_deps")
            .into_iter()
            .map(|(d, _)| d)
            .collect(),
        sysroot: s.bool("sysroot").unwrap_or(false),
        env: s.string_map("env"),
    };
    for (i, p) in tc.host_paths.iter().enumerate() {
        if !p.is_absolute() {
            let mut path = s.sub("host_paths");
            path.push(Seg::Index(i));
            s.error(
                &path,
                format!("host path `{}` is not absolute", p.display()),
                "toolchain host paths are absolute host directories",
            );
        }
    }
    s.errors.is_empty().then_some(tc)
}
