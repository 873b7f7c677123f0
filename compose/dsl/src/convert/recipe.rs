//! Recipe maps to [`Recipe`]s: sources, patches, steps, permissions.

use std::collections::BTreeMap;
use std::path::Path;

use kiln_model::{Diagnostic, Patch, Permission, Recipe, Source, SourceHash, Span, Step};
use rhai::{Dynamic, Map};

use super::fields::{abs_paths, as_map, check_env_names, is_hex, sub_fields, type_name, Fields};
use super::lock;
use crate::locate::{display_path, FieldPath, Locator, Seg};

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
    "debs",
    "links",
    "exclude",
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
    let debs = match f.string("debs") {
        Some(file) => {
            let span = f.locator().key(&f.sub("debs"));
            lock::debs(&mut f, &file, files_dir, span)
        }
        None => Vec::new(),
    };
    let links = f.string_map("links");
    for (path, target) in &links {
        let clean = path.starts_with('/')
            && path
                .split('/')
                .skip(1)
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !clean || target.is_empty() {
            let mut p = f.sub("links");
            p.push(Seg::Key(path.clone()));
            f.error(
                &p,
                format!(
                    "link `{path}` -> `{target}` is not an absolute path in the tree and a target"
                ),
                "write `\"/usr/bin/awk\": \"mawk\"`",
            );
        }
    }
    if !links.is_empty() && f.get("debs").is_none() {
        let p = f.sub("links");
        f.error(
            &p,
            "`links` are made in a package set; this recipe has no `debs`",
            "make the links in a step (`ln -s`), or add the lock",
        );
    }
    let exclude = abs_paths(&mut f, "exclude");
    if !exclude.is_empty() && f.get("debs").is_none() {
        let p = f.sub("exclude");
        f.error(
            &p,
            "`exclude` leaves paths out of a package set; this recipe has no `debs`",
            "remove the files in a step (`rm -r`), or add the lock",
        );
    }
    if f.get("debs").is_some() {
        // A locked package set is unpacked, not built.
        for field in ["sources", "patches", "steps", "build_deps"] {
            if f.get(field).is_some() {
                let p = f.sub(field);
                f.error(
                    &p,
                    format!(
                        "a recipe with `debs` unpacks its locked packages; it has no `{field}`"
                    ),
                    "move the build into another recipe that build-depends on this one",
                );
            }
        }
    } else if f.get("steps").is_none() {
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
            debs,
            links,
            exclude,
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
    let full = match crate::engine::recipe_file(files_dir, file) {
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
    match crate::content::path_blake3(&full) {
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
