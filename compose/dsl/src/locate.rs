//! Maps a field path of an evaluated value back to a line and column.
//!
//! A recipe evaluates to plain data, which has lost its positions. To say
//! *where* an unknown field or a wrong type is, we index the script's AST: every
//! map-literal key and string literal, with the chain of map keys around it.
//! Values computed at runtime fall back to the nearest enclosing key.

use std::path::PathBuf;

use rhai::{ASTNode, Expr, Position, AST};

use kiln_model::Span;

/// One segment of the path to a value inside a recipe or board map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

pub type FieldPath = Vec<Seg>;

/// Renders `sources[1].sha256`.
pub fn display_path(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) if out.is_empty() => out.push_str(k),
            Seg::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

#[derive(Clone)]
struct KeyPos {
    path: Vec<String>,
    pos: Position,
}

#[derive(Clone)]
struct StrPos {
    value: String,
    path: Vec<String>,
    pos: Position,
}

/// Positions of the keys and strings in one script.
#[derive(Clone)]
pub struct Locator {
    file: PathBuf,
    keys: Vec<KeyPos>,
    strings: Vec<StrPos>,
    /// Where the script's value starts (its last statement).
    top: Position,
    /// A board's override map for this recipe: fields it wrote are located there.
    overlay: Option<(Box<Locator>, Vec<Seg>)>,
}

impl Locator {
    pub fn new(file: PathBuf, ast: &AST) -> Locator {
        let mut keys = Vec::new();
        let mut strings = Vec::new();
        ast.walk(&mut |nodes: &[ASTNode]| {
            let Some(ASTNode::Expr(expr)) = nodes.last() else {
                return true;
            };
            match expr {
                Expr::Map(map, _) => {
                    let prefix = enclosing_keys(nodes);
                    for (ident, _) in map.0.iter() {
                        let mut path = prefix.clone();
                        path.push(ident.name.to_string());
                        keys.push(KeyPos {
                            path,
                            pos: ident.pos,
                        });
                    }
                }
                Expr::StringConstant(s, pos) => {
                    strings.push(StrPos {
                        value: s.to_string(),
                        path: enclosing_keys(nodes),
                        pos: *pos,
                    });
                }
                _ => {}
            }
            true
        });
        let top = ast
            .statements()
            .last()
            .map(|s| s.position())
            .unwrap_or(Position::new(1, 1));
        Locator {
            file,
            keys,
            strings,
            top,
            overlay: None,
        }
    }

    /// This locator, except that paths the board's `overrides.<recipe>` map
    /// wrote are located in the board file.
    pub fn with_overlay(&self, board: &Locator, prefix: Vec<Seg>) -> Locator {
        let mut loc = self.clone();
        loc.overlay = Some((Box::new(board.clone()), prefix));
        loc
    }

    fn overlay_key(&self, path: &[Seg]) -> Option<Span> {
        let (board, prefix) = self.overlay.as_ref()?;
        let mut full = prefix.clone();
        full.extend_from_slice(path);
        board.find_key(&full).map(|pos| board.span_of(pos))
    }

    pub fn file(&self) -> &PathBuf {
        &self.file
    }

    pub fn span_of(&self, pos: Position) -> Span {
        Span {
            file: self.file.clone(),
            line: pos.line().unwrap_or(1),
            column: pos.position().unwrap_or(1),
        }
    }

    /// Where the whole value starts.
    pub fn top(&self) -> Span {
        self.span_of(self.top)
    }

    /// Where the key at the end of `path` was written; falls back to the
    /// nearest enclosing key, then to the top of the value.
    pub fn key(&self, path: &[Seg]) -> Span {
        if let Some(span) = self.overlay_key(path) {
            return span;
        }
        let mut path = path.to_vec();
        loop {
            if path.is_empty() {
                return self.top();
            }
            if matches!(path.last(), Some(Seg::Key(_))) {
                if let Some(pos) = self.find_key(&path) {
                    return self.span_of(pos);
                }
            }
            path.pop();
        }
    }

    /// Where a string literal with this value was written inside `path`, else `key(path)`.
    pub fn string(&self, path: &[Seg], value: &str) -> Span {
        if let Some(span) = self.overlay_key(path) {
            return span;
        }
        let want = keys_only(path);
        let hit = self
            .strings
            .iter()
            .filter(|s| s.value == value && ends_with(&s.path, &want))
            .nth(0)
            .or_else(|| self.strings.iter().find(|s| s.value == value));
        match hit {
            Some(s) => self.span_of(s.pos),
            None => self.key(path),
        }
    }

    fn find_key(&self, path: &[Seg]) -> Option<Position> {
        let want = keys_only(path);
        let exact: Vec<&KeyPos> = self.keys.iter().filter(|k| k.path == want).collect();
        let candidates = if exact.is_empty() {
            self.keys
                .iter()
                .filter(|k| ends_with(&k.path, &want))
                .collect()
        } else {
            exact
        };
        if candidates.is_empty() {
            return None;
        }
        // `sources[1].sha256`: the second `sha256` under `sources` is the best guess.
        let nth = path.iter().rev().find_map(|s| match s {
            Seg::Index(i) => Some(*i),
            Seg::Key(_) => None,
        });
        let pick = nth.and_then(|i| candidates.get(i)).or(candidates.first());
        pick.map(|k| k.pos)
    }
}

fn keys_only(path: &[Seg]) -> Vec<String> {
    path.iter()
        .filter_map(|s| match s {
            Seg::Key(k) => Some(k.clone()),
            Seg::Index(_) => None,
        })
        .collect()
}

fn ends_with(have: &[String], want: &[String]) -> bool {
    have.len() >= want.len() && have[have.len() - want.len()..] == *want
}

/// The map keys whose values contain the last node of `nodes`.
fn enclosing_keys(nodes: &[ASTNode]) -> Vec<String> {
    let mut out = Vec::new();
    for pair in nodes.windows(2) {
        let (ASTNode::Expr(Expr::Map(map, _)), ASTNode::Expr(child)) = (&pair[0], &pair[1]) else {
            continue;
        };
        if let Some((ident, _)) = map.0.iter().find(|(_, e)| std::ptr::eq(e, *child)) {
            out.push(ident.name.to_string());
        }
    }
    out
}
