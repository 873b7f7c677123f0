//! Toolchain fingerprints and the sandbox environment a board's toolchain gives.
//!
//! A key must change when the compiler does, even if its name doesn't, so
//! each tool is identified by its version text and the blake3 of its binary
//! (and of gcc's real compiler, `cc1`, and of rustc's target std). Computing
//! that costs tens of milliseconds, so results are remembered per file stat
//! in the store: a no-op build must stay well under 300 ms.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_model::{Fingerprint, Target, ToolFingerprint, Toolchain};
use kiln_store::Store;

/// The fixed PATH inside every sandbox.
pub const SANDBOX_PATH: &str = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin";

#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error("toolchain `{toolchain}`: cannot find `{tool}` ({role}) on the sandbox PATH {SANDBOX_PATH}\n  help: install it (scripts/setup installs the default toolchains) or fix the toolchain's `{role}` field")]
    NotFound {
        toolchain: String,
        role: String,
        tool: String,
    },
    #[error("toolchain `{toolchain}`: `{tool}` compiles for `{actual}`, but the board's target triple is `{expected}`\n  help: use the `{expected}-gcc` cross compiler, or fix the board's target")]
    WrongTarget {
        toolchain: String,
        tool: String,
        actual: String,
        expected: String,
    },
    #[error("toolchain `{toolchain}`: running `{tool} {args}` failed: {reason}")]
    Run {
        toolchain: String,
        tool: String,
        args: String,
        reason: String,
    },
    #[error("toolchain `{toolchain}`: cannot read {path}: {source}")]
    Io {
        toolchain: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("toolchain `{toolchain}`: cannot encode it for its memo: {reason}")]
    Encode { toolchain: String, reason: String },
    #[error(
        "toolchain `{toolchain}`: the cc crate cannot find a C compiler for `{triple}`: {reason}"
    )]
    Discovery {
        toolchain: String,
        triple: String,
        reason: String,
    },
}

/// Finds `tool` the way the sandbox's PATH will.
pub fn resolve(tool: &str) -> Option<PathBuf> {
    if tool.contains('/') {
        return Path::new(tool).is_file().then(|| PathBuf::from(tool));
    }
    SANDBOX_PATH
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

fn run(tc: &Toolchain, tool: &Path, args: &[&str]) -> Result<String, ToolchainError> {
    let err = |reason: String| ToolchainError::Run {
        toolchain: tc.name.clone(),
        tool: tool.display().to_string(),
        args: args.join(" "),
        reason,
    };
    let out = Command::new(tool)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn hash_file(tc: &Toolchain, path: &Path) -> Result<String, ToolchainError> {
    let io = |source| ToolchainError::Io {
        toolchain: tc.name.clone(),
        path: path.into(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut h = blake3::Hasher::new();
    h.update_reader(file).map_err(io)?;
    Ok(h.finalize().to_hex().to_string())
}

/// The C compiler command, using the cc crate's discovery when the toolchain says `auto`.
pub fn c_compiler(tc: &Toolchain, target: &Target) -> Result<String, ToolchainError> {
    if tc.cc != "auto" {
        return Ok(tc.cc.clone());
    }
    let tool = cc::Build::new()
        .cargo_metadata(false)
        .cargo_warnings(false)
        .target(&target.rust_triple)
        .host(host_triple())
        .opt_level(2)
        .debug(false)
        .try_get_compiler()
        .map_err(|e| ToolchainError::Discovery {
            toolchain: tc.name.clone(),
            triple: target.rust_triple.clone(),
            reason: e.to_string(),
        })?;
    Ok(tool.path().display().to_string())
}

fn host_triple() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "aarch64-unknown-linux-gnu"
    } else {
        "x86_64-unknown-linux-gnu"
    }
}

/// The roles whose binaries go into the fingerprint.
fn roles(tc: &Toolchain, cc: &str) -> Vec<(&'static str, String)> {
    vec![
        ("cc", cc.to_string()),
        ("cxx", tc.cxx.clone()),
        ("ar", tc.ar.clone()),
        ("ld", tc.ld.clone()),
        ("nm", tc.nm.clone()),
        ("objcopy", tc.objcopy.clone()),
        ("ranlib", tc.ranlib.clone()),
        ("strip", tc.strip.clone()),
        ("rustc", tc.rustc.clone()),
        ("cargo", tc.cargo.clone()),
        ("rust_linker", tc.rust_linker.clone()),
    ]
}

/// Fingerprints the toolchain for `target`, using the store's memo when the
/// binaries' stat data hasn't changed.
pub fn fingerprint(
    tc: &Toolchain,
    target: &Target,
    store: &Store,
) -> Result<Fingerprint, ToolchainError> {
    let cc = c_compiler(tc, target)?;
    let mut resolved = Vec::new();
    let mut memo_key = blake3::Hasher::new();
    memo_key.update(b"kiln-toolchain-memo-v1\0");
    let encode = |e: serde_json::Error| ToolchainError::Encode {
        toolchain: tc.name.clone(),
        reason: e.to_string(),
    };
    memo_key.update(&serde_json::to_vec(tc).map_err(encode)?);
    memo_key.update(&serde_json::to_vec(target).map_err(encode)?);
    for (role, tool) in roles(tc, &cc) {
        let path = resolve(&tool).ok_or_else(|| ToolchainError::NotFound {
            toolchain: tc.name.clone(),
            role: role.to_string(),
            tool: tool.clone(),
        })?;
        let real = path.canonicalize().unwrap_or_else(|_| path.clone());
        let meta = std::fs::metadata(&real).map_err(|source| ToolchainError::Io {
            toolchain: tc.name.clone(),
            path: real.clone(),
            source,
        })?;
        memo_key.update(
            format!(
                "{role}\0{}\0{}\0{}\0{}\0",
                real.display(),
                meta.len(),
                meta.mtime_nsec(),
                meta.ino()
            )
            .as_bytes(),
        );
        memo_key.update(&meta.mtime().to_le_bytes());
        resolved.push((role, path, real));
    }
    let memo = store.toolchain_memo_path(&memo_key.finalize().to_hex());
    if let Ok(bytes) = std::fs::read(&memo) {
        if let Ok(fp) = serde_json::from_slice::<Fingerprint>(&bytes) {
            return Ok(fp);
        }
    }

    let mut tools = BTreeMap::new();
    for (role, path, real) in resolved {
        let mut extra = BTreeMap::new();
        let version = match role {
            "cc" | "cxx" | "rust_linker" => {
                let machine = run(tc, &path, &["-dumpmachine"])?;
                if role == "cc" && !triples_match(&machine, &target.triple) {
                    return Err(ToolchainError::WrongTarget {
                        toolchain: tc.name.clone(),
                        tool: path.display().to_string(),
                        actual: machine,
                        expected: target.triple.clone(),
                    });
                }
                let prog = if role == "cxx" { "cc1plus" } else { "cc1" };
                let inner = run(tc, &path, &[&format!("-print-prog-name={prog}")])?;
                if Path::new(&inner).is_absolute() && Path::new(&inner).is_file() {
                    extra.insert(prog.to_string(), hash_file(tc, Path::new(&inner))?);
                }
                first_line(&run(tc, &path, &["--version"])?)
            }
            "rustc" => {
                let libdir = run(
                    tc,
                    &path,
                    &["--print", "target-libdir", "--target", &target.rust_triple],
                )?;
                extra.insert("std".into(), dir_listing_hash(Path::new(&libdir)));
                run(tc, &path, &["-vV"])?
            }
            _ => first_line(&run(tc, &path, &["--version"])?),
        };
        tools.insert(
            role.to_string(),
            ToolFingerprint {
                path: path.display().to_string(),
                version,
                blake3: hash_file(tc, &real)?,
                extra,
            },
        );
    }
    let fp = Fingerprint {
        tools,
        host_paths: tc.host_paths.clone(),
    };
    if let Ok(bytes) = serde_json::to_vec_pretty(&fp) {
        // The memo is an optimisation: failing to write it must not fail the build.
        let _ = store.write_atomic(&memo, &bytes);
    }
    Ok(fp)
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

/// `x86_64-linux-gnu` and `x86_64-pc-linux-gnu` name the same target.
fn triples_match(machine: &str, triple: &str) -> bool {
    let norm = |t: &str| {
        let parts: Vec<&str> = t.split('-').collect();
        match parts.as_slice() {
            [arch, _vendor, os, env] => format!("{arch}-{os}-{env}"),
            _ => t.to_string(),
        }
    };
    norm(machine) == norm(triple)
}

/// rustc's std libraries carry their hashes in their file names.
fn dir_listing_hash(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    blake3::hash(names.join("\n").as_bytes())
        .to_hex()
        .to_string()
}

/// Where every sandbox merges its build dependencies, the target's C
/// library among them, as gcc is told.
const SYSROOT_FLAG: &str = "--sysroot=/sysroot";

/// The environment every step of a build starts from (before the recipe's own).
pub fn base_env(tc: &Toolchain, target: &Target, cc: &str) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    set("PATH", SANDBOX_PATH.into());
    set("TZ", "UTC".into());
    set("LC_ALL", "C.UTF-8".into());
    set("LANG", "C.UTF-8".into());
    set(
        "SOURCE_DATE_EPOCH",
        kiln_model::SOURCE_DATE_EPOCH.to_string(),
    );
    set("HOME", "/tmp".into());
    set("TMPDIR", "/tmp".into());
    set("USER", "root".into());
    set("KILN_ARCH", target.arch.clone());
    set("KILN_TRIPLE", target.triple.clone());
    set("KILN_RUST_TRIPLE", target.rust_triple.clone());
    set("KILN_SRC", "/build/src".into());
    set("KILN_OUT", "/out".into());
    set("KILN_SYSROOT", "/sysroot".into());
    // With the target's C library in /sysroot (a toolchain `sysroot`), every
    // compiler invocation is told so: in CC and CXX themselves, because
    // configure scripts preprocess and link with $CC alone, and in the
    // flags, because some builds (busybox, ...) call `${CROSS_COMPILE}gcc`.
    // gcc then searches only /sysroot for the target's headers, crt files
    // and libraries, never the build environment's /usr/include. (A native
    // gcc also searches its installation's own /usr/lib, the build
    // environment's: the boards' compiler is therefore gcc relocated into
    // a prefix of its own, recipes/target-gcc.rhai.)
    let sysroot = tc.sysroot;
    let with_sysroot = |tool: &str| match sysroot {
        true => format!("{tool} {SYSROOT_FLAG}"),
        false => tool.to_string(),
    };
    set("CC", with_sysroot(cc));
    set("CXX", with_sysroot(&tc.cxx));
    set("AR", tc.ar.clone());
    set("LD", tc.ld.clone());
    set("NM", tc.nm.clone());
    set("OBJCOPY", tc.objcopy.clone());
    set("RANLIB", tc.ranlib.clone());
    set("STRIP", tc.strip.clone());
    set("CROSS_COMPILE", format!("{}-", target.triple));
    let mut cflags = vec!["-O2".to_string()];
    cflags.extend(target.cpu_flags.iter().cloned());
    cflags.push("-ffile-prefix-map=/build/src=.".into());
    let mut ldflags = vec![
        "-L/sysroot/usr/lib".to_string(),
        "-Wl,-rpath-link,/sysroot/usr/lib".into(),
    ];
    if sysroot {
        cflags.insert(0, SYSROOT_FLAG.into());
        ldflags.insert(0, SYSROOT_FLAG.into());
        // The library's own directory, where Debian's -dev packages put
        // their libraries (/usr/lib/<triple>), for shared libraries that
        // need others at link time.
        ldflags.push(format!(
            "-Wl,-rpath-link,/sysroot/usr/lib/{}",
            target.triple
        ));
        set("CPPFLAGS", SYSROOT_FLAG.into());
    } else {
        set("CPPFLAGS", "-I/sysroot/usr/include".into());
    }
    set("CFLAGS", cflags.join(" "));
    set("CXXFLAGS", cflags.join(" "));
    set("LDFLAGS", ldflags.join(" "));
    set("PKG_CONFIG_SYSROOT_DIR", "/sysroot".into());
    set(
        "PKG_CONFIG_LIBDIR",
        format!(
            "/sysroot/usr/lib/pkgconfig:/sysroot/usr/lib/{}/pkgconfig:/sysroot/usr/share/pkgconfig",
            target.triple
        ),
    );
    set("RUSTC", tc.rustc.clone());
    set("CARGO", tc.cargo.clone());
    set("CARGO_HOME", "/tmp/cargo-home".into());
    set("CARGO_NET_OFFLINE", "true".into());
    set("CARGO_BUILD_TARGET", target.rust_triple.clone());
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.rust_triple.to_uppercase().replace('-', "_")
    );
    set(&linker_var, tc.rust_linker.clone());
    // rustc links through gcc, which finds the target's crt files and libc
    // in the sysroot only when told; paths in the binary are the source
    // tree's, relative, whatever the build directory.
    let mut rustflags = vec!["--remap-path-prefix=/build/src=.".to_string()];
    if sysroot {
        rustflags.push(format!("-Clink-arg={SYSROOT_FLAG}"));
    }
    set("RUSTFLAGS", rustflags.join(" "));
    for (k, v) in &tc.env {
        env.insert(k.clone(), v.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toolchain(cc: &str) -> Toolchain {
        Toolchain {
            name: "t".into(),
            cc: cc.into(),
            cxx: String::new(),
            ar: String::new(),
            ld: String::new(),
            nm: String::new(),
            objcopy: String::new(),
            ranlib: String::new(),
            strip: String::new(),
            rustc: String::new(),
            cargo: String::new(),
            rust_linker: String::new(),
            host_paths: Vec::new(),
            usr: None,
            build_deps: Vec::new(),
            sysroot: false,
            env: BTreeMap::new(),
        }
    }

    #[test]
    fn the_cc_crate_discovers_the_cross_compiler_for_a_triple() {
        let target = Target {
            arch: "aarch64".into(),
            triple: "aarch64-linux-gnu".into(),
            rust_triple: "aarch64-unknown-linux-gnu".into(),
            cpu_flags: Vec::new(),
        };
        let found = c_compiler(&toolchain("auto"), &target).expect("discovery");
        assert!(found.ends_with("aarch64-linux-gnu-gcc"), "{found}");
        assert_eq!(
            c_compiler(&toolchain("my-gcc"), &target).expect("explicit"),
            "my-gcc"
        );
    }

    #[test]
    fn triples_match_ignoring_the_vendor() {
        assert!(triples_match("x86_64-pc-linux-gnu", "x86_64-linux-gnu"));
        assert!(triples_match("aarch64-linux-gnu", "aarch64-linux-gnu"));
        assert!(!triples_match("x86_64-linux-gnu", "aarch64-linux-gnu"));
    }
}
