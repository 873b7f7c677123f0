//! Reading one script map field by field: names checked against the known
//! list, types checked, and every problem kept with the line it was written
//! on.

use std::collections::BTreeMap;

use kiln_model::{did_you_mean, Diagnostic, Span};
use rhai::{Dynamic, Map};

use crate::locate::{display_path, FieldPath, Locator, Seg};

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

pub(super) trait IfEmpty {
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

pub(super) fn check_env_names(f: &mut Fields, key: &str, env: &BTreeMap<String, String>) {
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

pub(super) fn abs_paths(f: &mut Fields, key: &str) -> Vec<String> {
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

pub(super) fn sub_fields<'a>(
    f: &Fields<'a>,
    path: &FieldPath,
    item: &'a Map,
    what: &'static str,
    known: &'static [&'static str],
) -> Fields<'a> {
    Fields::new(item, path.clone(), f.locator(), what, known)
}

pub(super) fn as_map(
    f: &mut Fields,
    path: &FieldPath,
    item: &Dynamic,
    expected: &str,
) -> Option<Map> {
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

pub(super) fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
