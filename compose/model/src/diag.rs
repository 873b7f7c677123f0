//! User-facing errors about recipes and boards.
//!
//! A `Diagnostic` always points at a place in a `.rhai` file and says what was
//! expected there, because the person reading it is about to open that file.

use std::fmt;
use std::path::Path;

use crate::Span;

/// One problem found in a recipe or board, with where and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub span: Span,
    pub message: String,
    /// What the user should do about it, when we can tell.
    pub help: Option<String>,
    /// Further places that take part (e.g. the other file of a duplicate).
    pub notes: Vec<(Span, String)>,
}

impl Diagnostic {
    pub fn new(span: Span, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            span,
            message: message.into(),
            help: None,
            notes: Vec::new(),
        }
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn note(mut self, span: Span, note: impl Into<String>) -> Diagnostic {
        self.notes.push((span, note.into()));
        self
    }

    /// Renders the diagnostic with the offending source line, rustc-style.
    /// `root` is where relative span paths are resolved to read the line.
    pub fn render(&self, root: &Path) -> String {
        let mut out = format!("error: {}\n", self.message);
        render_location(&mut out, &self.span, root);
        for (span, note) in &self.notes {
            out.push_str(&format!("note: {note}\n"));
            render_location(&mut out, span, root);
        }
        if let Some(help) = &self.help {
            out.push_str(&format!("  = help: {help}\n"));
        }
        out
    }
}

fn render_location(out: &mut String, span: &Span, root: &Path) {
    out.push_str(&format!("  --> {span}\n"));
    let path = if span.file.is_absolute() {
        span.file.clone()
    } else {
        root.join(&span.file)
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    if span.line == 0 {
        return;
    }
    let Some(line) = text.lines().nth(span.line - 1) else {
        return;
    };
    let num = span.line.to_string();
    let pad = " ".repeat(num.len());
    let caret_at = span.column.saturating_sub(1).min(line.len());
    out.push_str(&format!(
        "{pad} |\n{num} | {line}\n{pad} | {}^\n",
        " ".repeat(caret_at)
    ));
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.span, self.message)?;
        if let Some(help) = &self.help {
            write!(f, " (help: {help})")?;
        }
        for (span, note) in &self.notes {
            write!(f, "; {note} at {span}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// Several diagnostics at once: evaluation reports every bad recipe, not just the first.
#[derive(Clone, Debug, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn render(&self, root: &Path) -> String {
        self.0
            .iter()
            .map(|d| d.render(root))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// The closest of `candidates` to `word`, if it is close enough to be a typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= (word.len().max(c.len()) / 3).max(1))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Optimal-string-alignment distance: a swapped pair of letters, the most
/// common typo, counts as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(
            did_you_mean("verison", ["version", "name"]),
            Some("version")
        );
        assert_eq!(did_you_mean("zlbi", ["zlib", "busybox"]), Some("zlib"));
        assert_eq!(did_you_mean("kernel", ["zlib", "busybox"]), None);
    }
}
