//! Renders build events: a live display on a terminal, plain lines
//! otherwise, JSON lines for CI with `--json`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kiln_engine::{Event, Events};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    Plain,
    Json,
}

impl Mode {
    pub fn detect(json: bool) -> Mode {
        if json {
            Mode::Json
        } else if std::io::stderr().is_terminal() && std::env::var_os("CI").is_none() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

struct Running {
    since: Instant,
    log: PathBuf,
}

#[derive(Default)]
struct State {
    running: BTreeMap<String, Running>,
    /// Live lines currently on screen, to erase before the next draw.
    drawn: usize,
    total: usize,
    finished: usize,
    stopped: bool,
}

pub struct Progress {
    mode: Mode,
    state: Arc<Mutex<State>>,
    ticker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Progress {
    pub fn new(mode: Mode) -> Progress {
        let p = Progress {
            mode,
            state: Arc::new(Mutex::new(State::default())),
            ticker: Mutex::new(None),
        };
        if mode == Mode::Live {
            let state = p.state.clone();
            let handle = std::thread::spawn(move || loop {
                std::thread::sleep(Duration::from_millis(200));
                let Ok(mut s) = state.lock() else { return };
                if s.stopped {
                    return;
                }
                redraw(&mut s);
            });
            if let Ok(mut t) = p.ticker.lock() {
                *t = Some(handle);
            }
        }
        p
    }

    /// Stops the live display, leaving the screen clean.
    pub fn finish(&self) {
        if let Ok(mut s) = self.state.lock() {
            erase(&mut s);
            s.stopped = true;
        }
        if let Ok(mut t) = self.ticker.lock() {
            if let Some(h) = t.take() {
                let _ = h.join();
            }
        }
    }

    fn line(&self, s: &mut State, text: &str) {
        erase(s);
        if self.mode == Mode::Live {
            eprintln!("{text}");
        } else {
            eprintln!("{}", strip_ansi(text));
        }
        if self.mode == Mode::Live {
            redraw(s);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

fn erase(s: &mut State) {
    if s.drawn > 0 {
        eprint!("\x1b[{}A\x1b[J", s.drawn);
        s.drawn = 0;
    }
}

fn redraw(s: &mut State) {
    erase(s);
    let mut out = String::new();
    for (name, r) in &s.running {
        let step = current_step(&r.log).unwrap_or_default();
        out.push_str(&format!(
            "  \x1b[36mbuilding\x1b[0m {name:<16} {:>6}  {step}\n",
            elapsed(r.since.elapsed())
        ));
    }
    out.push_str(&format!(
        "  [{}/{} done, {} running]\n",
        s.finished,
        s.total,
        s.running.len()
    ));
    eprint!("{out}");
    let _ = std::io::stderr().flush();
    s.drawn = s.running.len() + 1;
}

/// The last `==> [step N/M] name` header the sandbox wrote to a log.
fn current_step(log: &Path) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(log).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)))
        .ok()?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let line = text.lines().rev().find(|l| l.starts_with("==> "))?;
    let short: String = line.trim_start_matches("==> ").chars().take(60).collect();
    Some(short)
}

pub fn elapsed(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl Events for Progress {
    fn event(&self, e: &Event) {
        if self.mode == Mode::Json {
            if let Ok(line) = serde_json::to_string(e) {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{line}");
            }
            // A CI log should still show why a build failed without parsing JSON.
            match e {
                Event::Failed { recipe, error, .. } => eprintln!("kiln: FAILED {recipe}\n{error}"),
                Event::Warning { message } => eprintln!("warning: {message}"),
                _ => {}
            }
            return;
        }
        let Ok(mut s) = self.state.lock() else { return };
        match e {
            Event::Plan { board, nodes } => {
                s.total = *nodes;
                self.line(&mut s, &format!("kiln: {board}: {nodes} recipes"));
            }
            Event::Cached { recipe, key, .. } => {
                s.finished += 1;
                self.line(
                    &mut s,
                    &format!("  \x1b[32m  cached\x1b[0m {recipe:<16} {}", &key[..12]),
                );
            }
            Event::Fetched {
                recipe,
                key,
                bytes,
                seconds,
                ..
            } => {
                s.finished += 1;
                let t = elapsed(Duration::from_secs_f64(*seconds));
                self.line(
                    &mut s,
                    &format!(
                        "  \x1b[32m fetched\x1b[0m {recipe:<16} {} ({}) in {t}",
                        &key[..12],
                        human_bytes(*bytes)
                    ),
                );
            }
            Event::Pushed {
                recipe,
                key,
                blobs,
                bytes,
            } => {
                if self.mode == Mode::Plain {
                    self.line(
                        &mut s,
                        &format!(
                            "  pushed {recipe} {} ({blobs} blobs, {})",
                            &key[..12],
                            human_bytes(*bytes)
                        ),
                    );
                }
            }
            Event::Warning { message } => {
                self.line(&mut s, &format!("\x1b[33mwarning\x1b[0m: {message}"));
            }
            Event::Started { recipe, log, .. } => {
                s.running.insert(
                    recipe.clone(),
                    Running {
                        since: Instant::now(),
                        log: log.clone(),
                    },
                );
                if self.mode == Mode::Plain {
                    self.line(&mut s, &format!("  building {recipe}"));
                }
            }
            Event::Built {
                recipe,
                key,
                seconds,
                ..
            } => {
                s.running.remove(recipe);
                s.finished += 1;
                let t = elapsed(Duration::from_secs_f64(*seconds));
                self.line(
                    &mut s,
                    &format!(
                        "  \x1b[32m   built\x1b[0m {recipe:<16} {} in {t}",
                        &key[..12]
                    ),
                );
            }
            Event::Failed { recipe, error, .. } => {
                s.running.remove(recipe);
                s.finished += 1;
                self.line(
                    &mut s,
                    &format!("  \x1b[31m  FAILED\x1b[0m {recipe}\n{error}"),
                );
            }
            Event::Skipped { recipe, because } => {
                s.finished += 1;
                self.line(
                    &mut s,
                    &format!("  \x1b[33m skipped\x1b[0m {recipe:<16} {because}"),
                );
            }
            Event::Done {
                built,
                cached,
                fetched,
                failed,
                skipped,
                seconds,
            } => {
                let t = elapsed(Duration::from_secs_f64(*seconds));
                let mut msg = format!("kiln: {built} built, {cached} cached");
                if *fetched > 0 {
                    msg.push_str(&format!(", {fetched} fetched"));
                }
                if *failed > 0 {
                    msg.push_str(&format!(", {failed} failed"));
                }
                if *skipped > 0 {
                    msg.push_str(&format!(", {skipped} skipped"));
                }
                msg.push_str(&format!(" in {t}"));
                self.line(&mut s, &msg);
            }
        }
    }
}

/// Drops colour escapes for logs and pipes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `12.3 MB`-style sizes for progress lines.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
