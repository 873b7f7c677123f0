//! `kiln cache …` and the remote-cache settings: `[cache]` in kiln.toml,
//! overridden by `--cache`, `--cache-read-only`, `--no-remote`,
//! `--signing-key` and `--trust`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use kiln_engine::{short, Event, Events};
use kiln_remote::{Entry, Fetch, Location, PublicKey, Push, Remote, SecretKey};
use kiln_store::{ActionResult, Digest, Store};
use serde::Deserialize;

use super::session::{expand_home, Loaded, Roots, Session};
use super::Failure;
use crate::progress::human_bytes;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// Make an ed25519 signing key and print its public key (for trusted_keys).
    Keygen {
        /// Where to write the secret key. Default: ~/.config/kiln/signing.key
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Upload everything a board's image needs: every node's entry and blobs.
    Push { board: Option<String> },
    /// Download everything a board's image needs into the local store.
    Pull { board: Option<String> },
    /// Hit rates, bytes moved and time spent with the remote cache.
    Stat,
}

/// `[cache]` in kiln.toml.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    read_only: bool,
    /// Relative to the project; `~/` is the home directory.
    #[serde(default)]
    signing_key: Option<String>,
    #[serde(default)]
    trusted_keys: Vec<String>,
    #[serde(default)]
    timeout_secs: Option<u64>,
    #[serde(default)]
    transfers: Option<usize>,
}

/// The command line's say on the remote.
#[derive(Debug, Default)]
pub struct RemoteFlags {
    pub url: Option<String>,
    pub read_only: bool,
    pub disabled: bool,
    pub signing_key: Option<PathBuf>,
    pub trusted: Vec<String>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
const DEFAULT_TRANSFERS: usize = 8;

impl Session {
    fn cache_setting(&self, what: &str) -> String {
        format!(
            "{} [cache] {what}",
            self.project.root.join("kiln.toml").display()
        )
    }

    /// The remote's configuration, or `None` when there is no remote.
    fn remote_config(&self) -> Result<Option<kiln_remote::Config>, Failure> {
        let flags = &self.remote;
        let cfg = &self.config.cache;
        if flags.disabled {
            return Ok(None);
        }
        let (url, from) = match (&flags.url, &cfg.url) {
            (Some(u), _) => (u.clone(), "--cache".to_string()),
            (None, Some(u)) => (u.clone(), self.cache_setting("url")),
            (None, None) => return Ok(None),
        };
        let location = Location::parse(&expand_home(&url))
            .map_err(|e| Failure::usage(format!("error: {from}: {e}")))?;
        let signing_key = match (&flags.signing_key, &cfg.signing_key) {
            (Some(p), _) => Some((p.clone(), "--signing-key".to_string())),
            (None, Some(p)) => Some((
                self.project.root.join(expand_home(p)),
                self.cache_setting("signing_key"),
            )),
            (None, None) => None,
        };
        let signing_key = signing_key
            .map(|(path, from)| {
                SecretKey::load(&path).map_err(|e| {
                    Failure::usage(format!(
                        "error: {from}: {e}\n  = help: `kiln cache keygen --out {}` makes one",
                        path.display()
                    ))
                })
            })
            .transpose()?;
        let mut trusted = Vec::new();
        for (k, from) in flags
            .trusted
            .iter()
            .map(|k| (k, "--trust".to_string()))
            .chain(
                cfg.trusted_keys
                    .iter()
                    .map(|k| (k, self.cache_setting("trusted_keys"))),
            )
        {
            trusted.push(
                PublicKey::parse(k).map_err(|e| Failure::usage(format!("error: {from}: {e}")))?,
            );
        }
        Ok(Some(kiln_remote::Config {
            location,
            read_only: flags.read_only || cfg.read_only,
            signing_key,
            trusted,
            timeout: cfg
                .timeout_secs
                .map(Duration::from_secs)
                .unwrap_or(DEFAULT_TIMEOUT),
            transfers: cfg.transfers.unwrap_or(DEFAULT_TRANSFERS),
        }))
    }

    /// The remote for a build: bad settings are errors, an unreachable
    /// server is a warning and a local build.
    pub(super) fn remote_for_build(&self, events: &dyn Events) -> Result<Option<Remote>, Failure> {
        let Some(config) = self.remote_config()? else {
            return Ok(None);
        };
        let url = format!("{:?}", config.location);
        match Remote::new(config) {
            Ok(r) => {
                if !r.trusts_anyone() {
                    events.event(&Event::Warning {
                        message: format!(
                            "the remote cache {} is configured but no key is trusted, so every entry from it is refused\n  = help: add the publishers' keys to [cache] trusted_keys in kiln.toml (or --trust KEY)",
                            r.describe()
                        ),
                    });
                }
                Ok(Some(r))
            }
            Err(e) => {
                events.event(&Event::Warning {
                    message: format!(
                        "the remote cache {url} is unavailable ({e}); building with the local store only"
                    ),
                });
                Ok(None)
            }
        }
    }

    fn remote_required(&self) -> Result<Remote, Failure> {
        let config = self.remote_config()?.ok_or_else(|| {
            Failure::usage(
                "error: no remote cache is configured\n  = help: pass --cache URL, or set [cache] url in kiln.toml",
            )
        })?;
        Remote::new(config).map_err(|e| Failure::build(format!("error: the remote cache: {e}")))
    }
}

pub(super) fn run(s: &Session, what: &CacheCommand) -> Result<(), Failure> {
    match what {
        CacheCommand::Keygen { out } => keygen(out.as_deref()),
        CacheCommand::Push { board } => push(s, board.as_deref()),
        CacheCommand::Pull { board } => pull(s, board.as_deref()),
        CacheCommand::Stat => stat(s),
    }
}

/// Writes a new secret key (mode 0600, never over an existing file) and
/// prints its public key.
pub(super) fn keygen(out: Option<&Path>) -> Result<(), Failure> {
    let path = match out {
        Some(p) => p.to_path_buf(),
        None => {
            let home = std::env::var_os("HOME").ok_or_else(|| {
                Failure::usage(
                    "error: no $HOME for the default key path\n  = help: pass --out FILE",
                )
            })?;
            Path::new(&home).join(".config/kiln/signing.key")
        }
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::usage(format!("error: creating {}: {e}", dir.display())))?;
    }
    let key = SecretKey::generate().map_err(|e| Failure::build(format!("error: {e}")))?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| {
            Failure::usage(format!(
                "error: {}: {e}\n  = help: keygen never overwrites a key; pass --out for a new file",
                path.display()
            ))
        })?;
    f.write_all(key.to_text().as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Failure::build(format!("error: writing {}: {e}", path.display())))?;
    eprintln!("kiln: wrote the secret key to {}", path.display());
    eprintln!("kiln: set [cache] signing_key to it; others trust this public key:");
    println!("{}", key.public());
    Ok(())
}

/// A node of a board's closure, with its key.
struct Node {
    name: String,
    key: Digest,
}

/// Walks the board's nodes (its image included) in build order, keying
/// each from its dependencies' outputs; `resolve` finds each output (or
/// not, and then nothing depending on it can be keyed). Returns the nodes
/// resolved and the names of those that were not.
fn walk(
    l: &Loaded,
    resolve: impl FnMut(&str, &Digest) -> Option<Digest>,
) -> (Vec<Node>, Vec<String>) {
    let walked = kiln_engine::walk(&l.plan, &l.rules, resolve);
    let mut done = Vec::new();
    let mut missing = Vec::new();
    for name in &l.plan.order {
        match walked.get(name) {
            Some(w) if w.output.is_some() => done.push(Node {
                name: name.clone(),
                key: w.key,
            }),
            _ => missing.push(name.clone()),
        }
    }
    (done, missing)
}

/// Evaluates `board` and runs `f` with its plan, rules and store, and the remote.
fn with_board(
    s: &Session,
    board: Option<&str>,
    f: impl FnOnce(&Loaded, &Remote, &Store, &str) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let board = s.board_name(board)?;
    let loaded = s.load(&board, &Roots::Board { image: true }, false)?;
    let store = &loaded.store;
    let _lock = store
        .lock_shared()
        .map_err(|e| Failure::usage(format!("error: {e}")))?;
    let remote = s.remote_required()?;
    let result = f(&loaded, &remote, store, &board);
    record_stats(store, &remote, &format!("cache {board}"));
    result
}

fn push(s: &Session, board: Option<&str>) -> Result<(), Failure> {
    with_board(s, board, |loaded, remote, store, board| {
        if remote.read_only() {
            return Err(Failure::usage(
                "error: the remote cache is read-only here (--cache-read-only or [cache] read_only)",
            ));
        }
        if !remote.can_sign() {
            return Err(Failure::usage(
                "error: no signing key, and unsigned entries would be refused by everyone\n  = help: run `kiln cache keygen`, then set [cache] signing_key in kiln.toml (or pass --signing-key)",
            ));
        }
        let mut local: BTreeMap<Digest, ActionResult> = BTreeMap::new();
        let (nodes, missing) = walk(loaded, |_, key| {
            let r = store.ac_get(key).ok().flatten()?;
            local.insert(*key, r);
            Some(r.output)
        });
        if !missing.is_empty() {
            return Err(Failure::build(format!(
                "error: not built here, so not pushed: {}\n  = help: run `kiln build {board}` first",
                missing.join(", ")
            )));
        }
        let items: Vec<(Digest, ActionResult)> =
            nodes.iter().map(|n| (n.key, local[&n.key])).collect();
        let (mut sent, mut bytes) = (0, 0);
        let mut errors = Vec::new();
        let mut damaged = Vec::new();
        for (node, push) in nodes.iter().zip(remote.push_many(store, &items)) {
            match push {
                Push::Uploaded { blobs, bytes: n } => {
                    sent += 1;
                    bytes += n;
                    eprintln!(
                        "  pushed  {:<16} {} ({blobs} new blobs, {})",
                        node.name,
                        short(&node.key),
                        human_bytes(n)
                    );
                }
                Push::Present => eprintln!("  present {:<16} {}", node.name, short(&node.key)),
                Push::Off => {}
                Push::Unavailable(why) => errors.push(format!(
                    "the remote cache {} is unavailable: {why}",
                    remote.describe()
                )),
                Push::Failed(why) => damaged.push(format!("{}: not pushed: {why}", node.name)),
                other => errors.push(format!("{}: {other:?}", node.name)),
            }
        }
        if !damaged.is_empty() {
            return Err(Failure::build(format!(
                "error: {}\n  = help: run `kiln build {board}`, which rebuilds what is missing or damaged, then `kiln cache push {board}` again",
                damaged.join("\n")
            )));
        }
        if remote.is_down() || !errors.is_empty() {
            return Err(Failure::build(format!(
                "error: {}\n  = help: run `kiln cache push {board}` again when that is fixed",
                errors.join("\n")
            )));
        }
        println!(
            "kiln cache push: {board}: {} nodes, {sent} uploaded ({}), {} already there",
            nodes.len(),
            human_bytes(bytes),
            nodes.len() - sent
        );
        Ok(())
    })
}

fn pull(s: &Session, board: Option<&str>) -> Result<(), Failure> {
    with_board(s, board, |loaded, remote, store, board| {
        let mut local = 0;
        let mut problems: Vec<String> = Vec::new();
        let mut pending: Vec<(String, Entry)> = Vec::new();
        // Entries first (each gives its node's output, so dependents' keys
        // can be computed), then every missing blob in one parallel pool.
        let (nodes, missing) = walk(loaded, |name, key| {
            if let Ok(Some(r)) = store.ac_get(key) {
                local += 1;
                return Some(r.output);
            }
            match remote.lookup(key) {
                Ok(entry) => {
                    let output = entry.output;
                    pending.push((name.to_string(), entry));
                    Some(output)
                }
                Err(Fetch::Refused(why)) => {
                    problems.push(format!("{name}: refused: {why}"));
                    None
                }
                Err(Fetch::Unavailable(why)) => {
                    problems.push(format!("the remote cache is unavailable: {why}"));
                    None
                }
                Err(_) => None,
            }
        });
        let entries: Vec<Entry> = pending.iter().map(|(_, e)| e.clone()).collect();
        let (mut fetched, mut bytes) = (0, 0);
        for ((name, entry), r) in pending.iter().zip(remote.complete(store, &entries)) {
            match r {
                Ok((_, n)) => {
                    fetched += 1;
                    bytes += n;
                    eprintln!(
                        "  fetched {name:<16} {} ({})",
                        short(&entry.key),
                        human_bytes(n)
                    );
                }
                Err(Fetch::Refused(why)) => problems.push(format!("{name}: refused: {why}")),
                Err(Fetch::Unavailable(why)) => {
                    problems.push(format!("the remote cache is unavailable: {why}"))
                }
                Err(_) => problems.push(format!("{name}: not fetched")),
            }
        }
        if !missing.is_empty() || !problems.is_empty() {
            let mut msg = format!("error: {board}: not everything could be pulled");
            for p in &problems {
                msg.push_str(&format!("\n  {p}"));
            }
            if !missing.is_empty() {
                msg.push_str(&format!(
                    "\n  the remote cache {} lacks {} (and so what depends on it)",
                    remote.describe(),
                    missing.join(", ")
                ));
            }
            msg.push_str(&format!(
                "\n  = help: whoever builds {board} can `kiln cache push {board}`; or `kiln build {board}` builds the rest here"
            ));
            return Err(Failure::build(msg));
        }
        println!(
            "kiln cache pull: {board}: {} nodes, {fetched} fetched ({}), {local} already local",
            nodes.len(),
            human_bytes(bytes)
        );
        Ok(())
    })
}

#[derive(serde::Serialize, Deserialize)]
struct StatsLine {
    unix: u64,
    command: String,
    remote: String,
    #[serde(flatten)]
    stats: kiln_remote::Snapshot,
}

/// Appends what this process did with the remote to the store's log.
pub(super) fn record_stats(store: &Store, remote: &Remote, command: &str) {
    let snap = remote.stats.snapshot();
    if snap.is_empty() {
        return;
    }
    let line = StatsLine {
        unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        command: command.to_string(),
        remote: remote.describe(),
        stats: snap,
    };
    let Ok(mut text) = serde_json::to_string(&line) else {
        return;
    };
    text.push('\n');
    let path = store.remote_stats_path();
    // One write of one line to an O_APPEND file: concurrent builds don't mix lines.
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(text.as_bytes()));
}

fn stat(s: &Session) -> Result<(), Failure> {
    let store = s.store()?;
    let path = store.remote_stats_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(Failure::usage(format!(
                "error: reading {}: {e}",
                path.display()
            )))
        }
    };
    let lines: Vec<StatsLine> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    if lines.is_empty() {
        println!(
            "kiln cache stat: no remote cache activity recorded in {}",
            store.root().display()
        );
        return Ok(());
    }
    let mut total = kiln_remote::Snapshot::default();
    for l in &lines {
        total.add(&l.stats);
    }
    println!(
        "kiln cache stat: {} commands that used a remote cache",
        lines.len()
    );
    print_snapshot("all", &total);
    if let Some(last) = lines.last() {
        println!("last: {} ({})", last.command, last.remote);
        print_snapshot("last", &last.stats);
    }
    Ok(())
}

fn print_snapshot(label: &str, s: &kiln_remote::Snapshot) {
    let lookups = s.hits + s.misses + s.refused;
    let rate = if lookups > 0 {
        100.0 * s.hits as f64 / lookups as f64
    } else {
        0.0
    };
    let secs = |us: u64| us as f64 / 1e6;
    let speed = |bytes: u64, us: u64| {
        if us > 0 {
            format!("{}/s", human_bytes((bytes as f64 / secs(us)) as u64))
        } else {
            "-".into()
        }
    };
    println!(
        "  {label:>4}: lookups {lookups}: {} hits, {} misses, {} refused; hit rate {rate:.1}%",
        s.hits, s.misses, s.refused
    );
    println!(
        "        down {} blobs, {} in {:.2} s ({}); up {} blobs, {} in {:.2} s ({}); lookups took {:.2} s; {} network errors",
        s.blobs_down,
        human_bytes(s.bytes_down),
        secs(s.micros_down),
        speed(s.bytes_down, s.micros_down),
        s.blobs_up,
        human_bytes(s.bytes_up),
        secs(s.micros_up),
        speed(s.bytes_up, s.micros_up),
        secs(s.micros_lookup),
        s.errors
    );
}
