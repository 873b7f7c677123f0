//! Turns the maps scripts evaluate to into the plain `model` types.
//!
//! Every field is checked for name and type, and every problem is reported
//! with the line it was written on — all of them, not just the first, since a
//! round trip per typo is exactly the slow feedback Kiln exists to avoid.

use std::collections::BTreeMap;
use std::path::Path;

use rhai::{Dynamic, Map};

use super::locate::{display_path, FieldPath, Locator, Seg};
use crate::diag::{did_you_mean, Diagnostic};
use crate::model::*;

/// Rhai's name for a value's type, in the words a recipe author uses.
pub fn type_name(v: &Dynamic) -> &'static str {
    if v.is_string() {
        "a string"
    } else if v.is_int() {
        "an integer"
    } else if v.is_bool() {
        "a boolean"
    } else if v.is_array() {
        "an array"
    } else if v.is_map() {
        "a map"
    } else if v.is_fnptr() {
        "a function"
    } else if v.is_unit() {
        "nothing (`()`)"
    } else {
        "an unsupported value"
    }
}

/// Reads one map, remembering which keys were consumed.
pub struct Fields<'a> {
    map: &'a Map,
    path: FieldPath,
    loc: &'a Locator,
    /// "recipe", "source", ...: used in messages.
    what: &'static str,
    known: &'static [&'static str],
    pub errors: Vec<Diagnostic>,
}

impl<'a> Fields<'a> {
    pub fn new(
        map: &'a Map,
        path: FieldPath,
        loc: &'a Locator,
        what: &'static str,
        known: &'static [&'static str],
    ) -> Fields<'a> {
        let mut f = Fields {
            map,
            path,
            loc,
            what,
            known,
            errors: Vec::new(),
        };
        f.check_unknown();
        f
    }

    fn check_unknown(&mut self) {
        for key in self.map.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let path = self.sub(key);
            let mut d = Diagnostic::new(
                self.loc.key(&path),
                format!(
                    "unknown field `{key}` in {} `{}`",
                    self.what,
                    display_path(&self.path).if_empty(self.what)
                ),
            );
            d = match did_you_mean(key, self.known.iter().copied()) {
                Some(s) => d.help(format!(
                    "did you mean `{s}`? expected one of: {}",
                    self.known.join(", ")
                )),
                None => d.help(format!("expected one of: {}", self.known.join(", "))),
            };
            self.errors.push(d);
        }
    }

    pub fn sub(&self, key: &str) -> FieldPath {
        let mut p = self.path.clone();
        p.push(Seg::Key(key.to_string()));
        p
    }

    pub fn locator(&self) -> &'a Locator {
        self.loc
    }

    pub fn get(&self, key: &str) -> Option<&'a Dynamic> {
        self.map.get(key).filter(|v| !v.is_unit())
    }

    pub fn wrong_type(&mut self, key: &str, expected: &str, found: &Dynamic) {
        let path = self.sub(key);
        self.errors.push(
            Diagnostic::new(
                self.loc.key(&path),
                format!(
                    "field `{}` must be {expected}, found {}",
                    display_path(&path),
                    type_name(found)
                ),
            )
            .help(format!("write `{key}: <{expected}>`")),
        );
    }

    pub fn missing(&mut self, key: &str, expected: &str) {
        let span = if self.path.is_empty() {
            self.loc.top()
        } else {
            self.loc.key(&self.path)
        };
        self.errors.push(
            Diagnostic::new(
                span,
                format!(
                    "{} `{}` is missing required field `{key}`",
                    self.what,
                    display_path(&self.path).if_empty(self.what)
                ),
            )
            .help(format!("add `{key}: <{expected}>`")),
        );
    }

    pub fn error(&mut self, path: &[Seg], msg: impl Into<String>, help: impl Into<String>) {
        self.errors
            .push(Diagnostic::new(self.loc.key(path), msg).help(help));
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        let v = self.get(key)?;
        match v.clone().into_immutable_string() {
            Ok(s) => Some(s.to_string()),
            Err(_) => {
                self.wrong_type(key, "a string", v);
                None
            }
        }
    }

    pub fn req_string(&mut self, key: &str) -> String {
        match self.get(key) {
            None => {
                self.missing(key, "a string");
                String::new()
            }
            Some(_) => self.string(key).unwrap_or_default(),
        }
    }

    pub fn opt_string(&mut self, key: &str) -> String {
        self.string(key).unwrap_or_default()
    }

    pub fn int(&mut self, key: &str, min: i64, max: i64) -> Option<i64> {
        let v = self.get(key)?;
        match v.as_int() {
            Ok(i) if (min..=max).contains(&i) => Some(i),
            Ok(i) => {
                let path = self.sub(key);
                self.error(
                    &path,
                    format!("field `{}` is {i}, out of range", display_path(&path)),
                    format!("use a value from {min} to {max}"),
                );
                None
            }
            Err(_) => {
                self.wrong_type(key, "an integer", v);
                None
            }
        }
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        let v = self.get(key)?;
        match v.as_bool() {
            Ok(b) => Some(b),
            Err(_) => {
                self.wrong_type(key, "a boolean", v);
                None
            }
        }
    }

    pub fn array(&mut self, key: &str) -> Vec<(FieldPath, Dynamic)> {
        let Some(v) = self.get(key) else {
            return Vec::new();
        };
        let Some(arr) = v.read_lock::<rhai::Array>() else {
            self.wrong_type(key, "an array", v);
            return Vec::new();
        };
        let base = self.sub(key);
        arr.iter()
            .enumerate()
            .map(|(i, item)| {
                let mut p = base.clone();
                p.push(Seg::Index(i));
                (p, item.clone())
            })
            .collect()
    }

    /// An array of strings; `spans` also returns where each string was written.
    pub fn strings(&mut self, key: &str) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for (path, item) in self.array(key) {
            match item.clone().into_immutable_string() {
                Ok(s) => {
                    let span = self.loc.string(&path, &s);
                    out.push((s.to_string(), span));
                }
                Err(_) => self.errors.push(
                    Diagnostic::new(
                        self.loc.key(&path),
                        format!(
                            "`{}` must be a string, found {}",
                            display_path(&path),
                            type_name(&item)
                        ),
                    )
                    .help(format!("`{key}` is an array of strings")),
                ),
            }
        }
        out
    }

    pub fn string_map(&mut self, key: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let Some(v) = self.get(key) else { return out };
        let Some(map) = v.read_lock::<Map>() else {
            self.wrong_type(key, "a map of strings", v);
            return out;
        };
        let base = self.sub(key);
        for (k, item) in map.iter() {
            let mut path = base.clone();
            path.push(Seg::Key(k.to_string()));
            // Integers are common in env maps (`JOBS: 4`); accept them as text.
            if let Ok(s) = item.clone().into_immutable_string() {
                out.insert(k.to_string(), s.to_string());
            } else if let Ok(i) = item.as_int() {
                out.insert(k.to_string(), i.to_string());
            } else {
                self.errors.push(
                    Diagnostic::new(
                        self.loc.key(&path),
                        format!(
                            "`{}` must be a string, found {}",
                            display_path(&path),
                            type_name(item)
                        ),
                    )
                    .help(format!("`{key}` maps names to strings")),
                );
            }
        }
        out
    }

    /// A nested map, read with its own field list.
    pub fn map(&mut self, key: &str) -> Option<Map> {
        let v = self.get(key)?;
        match v.read_lock::<Map>() {
            Some(m) => Some(m.clone()),
            None => {
                self.wrong_type(key, "a map (`#{ ... }`)", v);
                None
            }
        }
    }
}

trait IfEmpty {
    fn if_empty(self, other: &str) -> String;
}

impl IfEmpty for String {
    fn if_empty(self, other: &str) -> String {
        if self.is_empty() {
            other.to_string()
        } else {
            self
        }
    }
}

pub const RECIPE_FIELDS: &[&str] = &[
    "name",
    "version",
    "description",
    "license",
    "homepage",
    "cpe",
    "purl",
    "sources",
    "patches",
    "build_deps",
    "runtime_deps",
    "env",
    "steps",
    "installs",
    "state",
    "units",
    "permissions",
    "provides",
];
const REMOTE_FIELDS: &[&str] = &[
    "url", "sha256", "blake3", "debian", "strip", "dest", "unpack",
];
const LOCAL_FIELDS: &[&str] = &["file", "dest"];
const PATCH_FIELDS: &[&str] = &["file", "strip"];
const STEP_FIELDS: &[&str] = &["name", "run", "env"];
const PERMISSION_FIELDS: &[&str] = &["path", "mode", "uid", "gid", "caps"];

/// Converts an evaluated recipe map. `files_dir` is where its local files are.
pub fn recipe(map: &Map, loc: &Locator, files_dir: &Path) -> Result<Recipe, Vec<Diagnostic>> {
    let mut f = Fields::new(map, Vec::new(), loc, "recipe", RECIPE_FIELDS);
    let name = f.req_string("name");
    if !name.is_empty() && !valid_name(&name) {
        let p = f.sub("name");
        f.error(
            &p,
            format!("recipe name `{name}` is not valid"),
            "use lowercase letters, digits, `-`, `_`, `.` and `+`, starting with a letter or digit",
        );
    }
    let version = f.req_string("version");
    let description = f.opt_string("description");
    let license = f.opt_string("license");
    let homepage = f.opt_string("homepage");
    let cpe = f.opt_string("cpe");
    let purl = f.opt_string("purl");

    let mut sources = Vec::new();
    for (path, item) in f.array("sources") {
        if let Some(s) = source(&mut f, &path, &item, files_dir) {
            sources.push(s);
        }
    }
    let mut patches = Vec::new();
    for (path, item) in f.array("patches") {
        if let Some(p) = patch(&mut f, &path, &item, files_dir) {
            patches.push(p);
        }
    }
    let mut dep_spans = BTreeMap::new();
    let mut deps = |f: &mut Fields, key: &str| -> Vec<String> {
        f.strings(key)
            .into_iter()
            .map(|(s, span)| {
                dep_spans.entry(s.clone()).or_insert(span);
                s
            })
            .collect()
    };
    let build_deps = deps(&mut f, "build_deps");
    let runtime_deps = deps(&mut f, "runtime_deps");
    let env = f.string_map("env");
    check_env_names(&mut f, "env", &env);
    if f.get("steps").is_none() {
        f.missing("steps", "an array of commands");
    }
    let mut steps = Vec::new();
    for (i, (path, item)) in f.array("steps").into_iter().enumerate() {
        if let Some(s) = step(&mut f, i, &path, &item) {
            steps.push(s);
        }
    }
    let installs = abs_paths(&mut f, "installs");
    let state = abs_paths(&mut f, "state");
    let units = f.strings("units").into_iter().map(|(s, _)| s).collect();
    let provides = f.strings("provides").into_iter().map(|(s, _)| s).collect();
    let mut permissions = Vec::new();
    for (path, item) in f.array("permissions") {
        if let Some(p) = permission(&mut f, &path, &item) {
            permissions.push(p);
        }
    }
    let span = loc.top();
    if f.errors.is_empty() {
        Ok(Recipe {
            name,
            version,
            description,
            license,
            homepage,
            cpe,
            purl,
            sources,
            patches,
            build_deps,
            runtime_deps,
            env,
            steps,
            installs,
            state,
            units,
            provides,
            permissions,
            span,
            files_dir: files_dir.to_path_buf(),
            dep_spans,
        })
    } else {
        Err(f.errors)
    }
}

pub fn valid_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.+".contains(c))
}

fn check_env_names(f: &mut Fields, key: &str, env: &BTreeMap<String, String>) {
    for name in env.keys() {
        let ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ok {
            let mut p = f.sub(key);
            p.push(Seg::Key(name.clone()));
            f.error(
                &p,
                format!("`{name}` is not a valid environment variable name"),
                "use letters, digits and `_`",
            );
        }
    }
}

fn abs_paths(f: &mut Fields, key: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (s, span) in f.strings(key) {
        if !s.starts_with('/') || s.split('/').any(|c| c == "..") {
            f.errors.push(
                Diagnostic::new(span, format!("`{key}` entry `{s}` is not an absolute path")).help(
                    format!(
                        "write it as it appears in the image, e.g. `/{}`",
                        s.trim_start_matches("./")
                    ),
                ),
            );
        } else {
            out.push(s);
        }
    }
    out
}

fn sub_fields<'a>(
    f: &Fields<'a>,
    path: &FieldPath,
    item: &'a Map,
    what: &'static str,
    known: &'static [&'static str],
) -> Fields<'a> {
    Fields::new(item, path.clone(), f.locator(), what, known)
}

fn as_map(f: &mut Fields, path: &FieldPath, item: &Dynamic, expected: &str) -> Option<Map> {
    match item.read_lock::<Map>() {
        Some(m) => Some(m.clone()),
        None => {
            f.error(
                path,
                format!(
                    "`{}` must be {expected}, found {}",
                    display_path(path),
                    type_name(item)
                ),
                format!("write it as {expected}"),
            );
            None
        }
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn source(f: &mut Fields, path: &FieldPath, item: &Dynamic, files_dir: &Path) -> Option<Source> {
    let map = as_map(
        f,
        path,
        item,
        "a source map (`#{ url: ..., sha256: ... }` or `#{ file: ... }`)",
    )?;
    let local = map.contains_key("file");
    let (what, known) = if local {
        ("local source", LOCAL_FIELDS)
    } else {
        ("source", REMOTE_FIELDS)
    };
    let mut s = sub_fields(f, path, &map, what, known);
    let span = s.locator().key(path);
    let result = if local {
        let file = s.req_string("file");
        let dest = s.string("dest").unwrap_or_else(|| file.clone());
        local_hash(&mut s, "file", &file, files_dir).map(|blake3| Source::Local {
            path: file,
            blake3,
            dest,
            span,
            base: None,
        })
    } else {
        let url = s.req_string("url");
        let hash = match (s.string("sha256"), s.string("blake3")) {
            (Some(h), None) => check_hash(&mut s, "sha256", h, 64).map(SourceHash::Sha256),
            (None, Some(h)) => check_hash(&mut s, "blake3", h, 64).map(SourceHash::Blake3),
            (Some(_), Some(_)) => {
                let p = s.sub("blake3");
                s.error(
                    &p,
                    "a source has both `sha256` and `blake3`",
                    "keep one of them",
                );
                None
            }
            (None, None) => {
                s.missing("sha256", "the sha256 of the file, as lowercase hex");
                None
            }
        };
        let debian = s.string("debian");
        let strip = s.int("strip", 0, 64).unwrap_or(1) as u32;
        let dest = s.string("dest").unwrap_or_default();
        let unpack = s.bool("unpack").unwrap_or(true);
        if !url.is_empty() && !url.contains("://") {
            let p = s.sub("url");
            s.error(
                &p,
                format!("`{url}` is not a URL"),
                "write the full upstream URL, e.g. `https://.../name-1.0.tar.gz`",
            );
        }
        hash.map(|hash| Source::Remote {
            url,
            hash,
            debian,
            strip,
            dest,
            unpack,
            span,
        })
    };
    check_dest(&mut s, &result);
    f.errors.append(&mut s.errors);
    result
}

fn check_dest(f: &mut Fields, source: &Option<Source>) {
    let dest = match source {
        Some(Source::Remote { dest, .. }) | Some(Source::Local { dest, .. }) => dest,
        None => return,
    };
    if dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
        let p = f.sub("dest");
        f.error(
            &p,
            format!("`dest` `{dest}` must be a relative path below /build/src"),
            "drop the leading `/` and any `..`",
        );
    }
}

fn check_hash(f: &mut Fields, key: &str, h: String, len: usize) -> Option<String> {
    if is_hex(&h, len) {
        Some(h)
    } else {
        let p = f.sub(key);
        f.error(
            &p,
            format!("`{key}` `{h}` is not {len} lowercase hex digits"),
            format!("compute it with `{key}sum FILE`"),
        );
        None
    }
}

fn local_hash(f: &mut Fields, key: &str, file: &str, files_dir: &Path) -> Option<String> {
    if file.is_empty() {
        return None;
    }
    let full = match super::engine::recipe_file(files_dir, file) {
        Ok(p) => p,
        Err(e) => {
            let p = f.sub(key);
            f.error(
                &p,
                e.to_string(),
                "name a file in the recipe's own directory",
            );
            return None;
        }
    };
    match crate::hashing::path_blake3(&full) {
        Ok(h) => Some(h.to_hex().to_string()),
        Err(e) => {
            let p = f.sub(key);
            f.error(
                &p,
                format!("cannot read `{file}` ({}): {e}", full.display()),
                format!("put the file at {}", full.display()),
            );
            None
        }
    }
}

fn patch(f: &mut Fields, path: &FieldPath, item: &Dynamic, files_dir: &Path) -> Option<Patch> {
    if let Ok(file) = item.clone().into_immutable_string() {
        let span = f.locator().string(path, &file);
        let empty = Map::new();
        let mut sub = Fields::new(&empty, path.clone(), f.locator(), "patch", PATCH_FIELDS);
        let hash = local_hash_at(&mut sub, &file, files_dir, span.clone());
        f.errors.append(&mut sub.errors);
        return hash.map(|blake3| Patch {
            path: file.to_string(),
            blake3,
            strip: 1,
            span,
        });
    }
    let map = as_map(f, path, item, "a patch file name or `#{ file, strip }`")?;
    let mut s = sub_fields(f, path, &map, "patch", PATCH_FIELDS);
    let file = s.req_string("file");
    let strip = s.int("strip", 0, 64).unwrap_or(1) as u32;
    let span = s.locator().key(path);
    let hash = local_hash(&mut s, "file", &file, files_dir);
    f.errors.append(&mut s.errors);
    hash.map(|blake3| Patch {
        path: file,
        blake3,
        strip,
        span,
    })
}

fn local_hash_at(f: &mut Fields, file: &str, files_dir: &Path, span: Span) -> Option<String> {
    let before = f.errors.len();
    let h = local_hash(f, "file", file, files_dir);
    for d in &mut f.errors[before..] {
        d.span = span.clone();
    }
    h
}

fn step(f: &mut Fields, index: usize, path: &FieldPath, item: &Dynamic) -> Option<Step> {
    let default_name = format!("step {}", index + 1);
    let span = f.locator().key(path);
    if let Ok(text) = item.clone().into_immutable_string() {
        return Some(Step {
            name: default_name,
            argv: shell(&text),
            env: BTreeMap::new(),
            span: f.locator().string(path, &text),
        });
    }
    if item.is_array() {
        let argv = argv(f, path, item)?;
        return Some(Step {
            name: default_name,
            argv,
            env: BTreeMap::new(),
            span,
        });
    }
    let map = as_map(
        f,
        path,
        item,
        "a command string, an argv array, or `#{ name, run, env }`",
    )?;
    let mut s = sub_fields(f, path, &map, "step", STEP_FIELDS);
    let name = s.string("name").unwrap_or(default_name);
    let env = s.string_map("env");
    check_env_names(&mut s, "env", &env);
    let run = match s.get("run") {
        None => {
            s.missing("run", "a command string or argv array");
            None
        }
        Some(v) if v.is_array() => {
            let p = s.sub("run");
            argv(&mut s, &p, v)
        }
        Some(v) => match v.clone().into_immutable_string() {
            Ok(text) => Some(shell(&text)),
            Err(_) => {
                s.wrong_type("run", "a command string or argv array", v);
                None
            }
        },
    };
    f.errors.append(&mut s.errors);
    run.map(|argv| Step {
        name,
        argv,
        env,
        span,
    })
}

fn shell(text: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-euc".into(), text.to_string()]
}

fn argv(f: &mut Fields, path: &FieldPath, item: &Dynamic) -> Option<Vec<String>> {
    let arr = item.read_lock::<rhai::Array>()?;
    let mut out = Vec::new();
    for (i, a) in arr.iter().enumerate() {
        match a.clone().into_immutable_string() {
            Ok(s) => out.push(s.to_string()),
            Err(_) => {
                let mut p = path.clone();
                p.push(Seg::Index(i));
                f.error(
                    &p,
                    format!(
                        "argument {} of `{}` must be a string, found {}",
                        i + 1,
                        display_path(path),
                        type_name(a)
                    ),
                    "quote it, e.g. `\"4\"`",
                );
                return None;
            }
        }
    }
    if out.is_empty() {
        f.error(
            path,
            format!("`{}` is an empty command", display_path(path)),
            "give at least the program to run",
        );
        return None;
    }
    Some(out)
}

fn permission(f: &mut Fields, path: &FieldPath, item: &Dynamic) -> Option<Permission> {
    let map = as_map(f, path, item, "`#{ path, mode, uid, gid, caps }`")?;
    let mut s = sub_fields(f, path, &map, "permission", PERMISSION_FIELDS);
    let p = s.req_string("path");
    if !p.is_empty() && !p.starts_with('/') {
        let fp = s.sub("path");
        s.error(
            &fp,
            format!("permission path `{p}` is not absolute"),
            "write the path as it appears in the image",
        );
    }
    let mode = s.int("mode", 0, 0o7777).map(|m| m as u32);
    let uid = s.int("uid", 0, u32::MAX as i64).map(|m| m as u32);
    let gid = s.int("gid", 0, u32::MAX as i64).map(|m| m as u32);
    let caps = s.string("caps");
    let span = s.locator().key(path);
    f.errors.append(&mut s.errors);
    Some(Permission {
        path: p,
        mode,
        uid,
        gid,
        caps,
        span,
    })
}

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
            let d = PartitionLayout::default();
            let mib = |s: &mut Fields, k: &str, def: u64| {
                s.int(k, 0, 1 << 30).map(|v| v as u64).unwrap_or(def)
            };
            let table = s.string("table").unwrap_or(d.table.clone());
            if table != "mbr" && table != "gpt" {
                let path = s.sub("table");
                s.error(
                    &path,
                    format!("partition table `{table}` is not supported"),
                    "use \"mbr\" or \"gpt\"",
                );
            }
            let layout = PartitionLayout {
                table,
                gap_mib: mib(&mut s, "gap_mib", d.gap_mib),
                align_mib: mib(&mut s, "align_mib", d.align_mib),
                boot_mib: mib(&mut s, "boot_mib", d.boot_mib),
                root_mib: mib(&mut s, "root_mib", d.root_mib),
                state_mib: mib(&mut s, "state_mib", d.state_mib),
                data_mib: mib(&mut s, "data_mib", d.data_mib),
                disk_mib: mib(&mut s, "disk_mib", d.disk_mib),
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
    let full = match super::engine::recipe_file(board_dir, file) {
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
    match crate::hashing::path_blake3(&full) {
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
