//! The `kiln` command line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod cache;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_remote::Remote;
use kiln_store::{Root, Store};
use serde::Deserialize;

use crate::build::{self, Context, Options};
use crate::diag::Diagnostics;
use crate::dsl::{self, Evaluation, Project};
use crate::fetch::Mirror;
use crate::graph::{self, Plan};
use crate::image;
use crate::key;
use crate::model::Span;
use crate::progress::{Mode, Progress};

#[derive(Parser, Debug)]
#[command(
    name = "kiln",
    version,
    about = "Build balenaOS-style images from Rhai recipes, reproducibly"
)]
struct Cli {
    /// The store (action cache + CAS). Default: $KILN_STORE, else ~/.cache/kiln.
    #[arg(long, global = true, env = "KILN_STORE")]
    store: Option<PathBuf>,
    /// The project directory (holding kiln.toml). Default: found upward from the current directory.
    #[arg(long, global = true)]
    project: Option<PathBuf>,
    /// A source mirror (file:// directory, path or http URL), tried before upstream. Repeatable.
    #[arg(long = "mirror", global = true)]
    mirrors: Vec<String>,
    /// Fetch sources from mirrors only, never from upstream URLs.
    #[arg(long, global = true)]
    offline: bool,
    /// Machine-readable events on stdout, one JSON object per line.
    #[arg(long, global = true)]
    json: bool,
    /// A shared cache: http(s)://HOST/PATH (WebDAV), grpc://HOST:PORT[/INSTANCE]
    /// (REAPI), s3://BUCKET[/PREFIX][?endpoint=URL&region=R] (S3) or file:///DIR.
    /// Read-through, write-back. Default: kiln.toml's [cache] url.
    #[arg(long = "cache", global = true, env = "KILN_CACHE", value_name = "URL")]
    cache_url: Option<String>,
    /// Use the shared cache but never upload to it.
    #[arg(long, global = true)]
    cache_read_only: bool,
    /// Ignore any configured shared cache.
    #[arg(long, global = true)]
    no_remote: bool,
    /// The ed25519 key that signs what this build uploads (from `kiln cache keygen`).
    #[arg(long, global = true, env = "KILN_SIGNING_KEY", value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// A public key (ed25519:HEX) whose cache entries are trusted. Repeatable.
    #[arg(long = "trust", global = true, value_name = "KEY")]
    trusted_keys: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build a board's packages, or one recipe for a board.
    Build {
        /// A board (name or .rhai path), or recipe names (built for --board).
        #[arg(required = true)]
        targets: Vec<String>,
        #[arg(long)]
        board: Option<String>,
        /// Build everything that doesn't depend on a failure.
        #[arg(long)]
        keep_going: bool,
        /// Concurrent jobs (jobserver tokens). Default: the number of CPUs.
        #[arg(long, short)]
        jobs: Option<usize>,
        /// Build a board's packages but not its disk image.
        #[arg(long)]
        no_image: bool,
    },
    /// Print a recipe's derivation (its data, inputs and hashes) as JSON.
    Show {
        recipe: String,
        #[arg(long)]
        board: Option<String>,
    },
    /// Print the build graph of a board.
    Graph {
        #[arg(long)]
        board: Option<String>,
        #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
        format: GraphFormat,
    },
    /// Explain which inputs changed since the last build of a recipe.
    Why {
        recipe: String,
        #[arg(long)]
        board: Option<String>,
    },
    /// Print the log of a recipe's last build.
    Log {
        recipe: String,
        #[arg(long)]
        board: Option<String>,
    },
    /// Remove store entries no recent build refers to.
    Gc {
        /// Builds older than this many days no longer keep their outputs alive.
        #[arg(long, default_value_t = 30)]
        max_age_days: u64,
    },
    /// Evaluate every board and recipe and report all errors.
    Check,
    /// List every remote source of every recipe (for scripts/seed-sources).
    Sources,
    /// Boot a board's built image in QEMU (serial console on stdio).
    Run {
        /// The board (default: kiln.toml's default_board).
        board: Option<String>,
        /// Keep the guest's changes in out/<board>.img (default: -snapshot).
        #[arg(long)]
        persist: bool,
        /// Host port forwarded to the guest's SSH (22222).
        #[arg(long, default_value_t = 22222)]
        ssh_port: u16,
        /// Host port forwarded to the guest's supervisor API (48484).
        #[arg(long, default_value_t = 48484)]
        api_port: u16,
        /// Print the QEMU command instead of running it.
        #[arg(long)]
        dry_run: bool,
        /// Boot this copy of the image instead of out/<board>.img.
        #[arg(long)]
        image: Option<PathBuf>,
        /// Extra QEMU arguments (after `--`).
        #[arg(last = true)]
        qemu_args: Vec<String>,
    },
    /// The shared cache: keys, uploads, downloads and statistics.
    Cache {
        #[command(subcommand)]
        what: cache::CacheCommand,
    },
    /// Write one of Kiln's filesystems, or a whole disk, from directories
    /// (with their real owners and modes). No project needed.
    Fs {
        #[command(subcommand)]
        what: FsCommand,
    },
    #[command(name = "__sandbox", hide = true)]
    Sandbox { spec: PathBuf },
}

#[derive(Subcommand, Debug)]
enum FsCommand {
    /// An EROFS image (what Kiln writes for root filesystems).
    Erofs {
        dir: PathBuf,
        out: PathBuf,
        /// `lz4hc` (level 9, as mkfs.erofs -zlz4hc), `lz4`, or `none`.
        #[arg(long, default_value = "lz4hc")]
        compress: String,
        #[arg(long)]
        label: Option<String>,
    },
    /// An ext4 image with a journal (what Kiln writes for state and data).
    Ext4 {
        dir: PathBuf,
        out: PathBuf,
        #[arg(long)]
        size_mib: u64,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// A balenaOS-layout disk: FAT boot, EROFS root A, empty root B, ext4
    /// state and data; writes OUT and OUT.zst.
    Disk {
        out: PathBuf,
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        boot: Option<PathBuf>,
        #[arg(long)]
        state: Option<PathBuf>,
        #[arg(long)]
        data: Option<PathBuf>,
        #[arg(long, default_value_t = 40)]
        boot_mib: u64,
        #[arg(long, default_value_t = 320)]
        root_mib: u64,
        #[arg(long, default_value_t = 20)]
        state_mib: u64,
        #[arg(long, default_value_t = 192)]
        data_mib: u64,
        #[arg(long)]
        gpt: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum GraphFormat {
    Dot,
    Json,
}

/// `kiln.toml`: project settings.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    default_board: Option<String>,
    #[serde(default)]
    mirrors: Vec<String>,
    #[serde(default)]
    cache: cache::CacheConfig,
}

/// An error for the user: printed as is, then the process exits with `code`.
pub struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
    fn build(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

type CliResult = Result<(), Failure>;

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Sandbox { spec } = &cli.command {
        return ExitCode::from(crate::sandbox::sandbox_main(spec).clamp(0, 255) as u8);
    }
    let result = match &cli.command {
        Command::Fs { what } => cmd_fs(what),
        Command::Cache {
            what: cache::CacheCommand::Keygen { out },
        } => cache::keygen(out.as_deref()),
        _ => run(cli),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("{}", f.message.trim_end());
            ExitCode::from(f.code)
        }
    }
}

struct Session {
    project: Project,
    config: Config,
    store_root: PathBuf,
    mirrors: Vec<Mirror>,
    offline: bool,
    json: bool,
    remote: cache::RemoteFlags,
}

impl Session {
    fn open(cli: &Cli) -> Result<Session, Failure> {
        let project = match &cli.project {
            Some(p) => Project::at(
                p.canonicalize()
                    .map_err(|e| Failure::usage(format!("error: project {}: {e}", p.display())))?,
            ),
            None => {
                let cwd = std::env::current_dir()
                    .map_err(|e| Failure::usage(format!("error: current directory: {e}")))?;
                Project::discover(&cwd).ok_or_else(|| {
                    Failure::usage(format!(
                        "error: no kiln.toml in {} or any parent directory\n  = help: run kiln inside a Kiln project, or pass --project DIR",
                        cwd.display()
                    ))
                })?
            }
        };
        let config_path = project.root.join("kiln.toml");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            Failure::usage(format!("error: cannot read {}: {e}", config_path.display()))
        })?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| Failure::usage(format!("error: {}: {e}", config_path.display())))?;
        let store_root = match &cli.store {
            Some(s) => s.clone(),
            None => Store::default_root().map_err(|e| Failure::usage(format!("error: {e}")))?,
        };
        let mut specs: Vec<String> = cli.mirrors.clone();
        if let Ok(env) = std::env::var("KILN_MIRRORS") {
            specs.extend(
                env.split([',', ' '])
                    .filter(|s| !s.is_empty())
                    .map(String::from),
            );
        }
        specs.extend(config.mirrors.iter().cloned());
        if let Some(home) = std::env::var_os("HOME") {
            let default = Path::new(&home).join(".cache/kiln-mirror");
            if default.is_dir() {
                specs.push(default.display().to_string());
            }
        }
        let mirrors = specs
            .iter()
            .map(|s| {
                let expanded = expand_home(s);
                Mirror::parse(&expanded).map_err(|e| Failure::usage(format!("error: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Session {
            project,
            config,
            store_root,
            mirrors,
            offline: cli.offline,
            json: cli.json,
            remote: cache::RemoteFlags {
                url: cli.cache_url.clone(),
                read_only: cli.cache_read_only,
                disabled: cli.no_remote,
                signing_key: cli.signing_key.clone(),
                trusted: cli.trusted_keys.clone(),
            },
        })
    }

    fn store(&self) -> Result<Store, Failure> {
        Store::open(&self.store_root).map_err(|e| {
            Failure::usage(format!(
                "error: cannot open the store at {}: {e}",
                self.store_root.display()
            ))
        })
    }

    fn board_name(&self, given: Option<&str>) -> Result<String, Failure> {
        given
            .map(String::from)
            .or_else(|| std::env::var("KILN_BOARD").ok())
            .or_else(|| self.config.default_board.clone())
            .ok_or_else(|| {
                Failure::usage(
                    "error: which board? pass --board NAME (or set default_board in kiln.toml)",
                )
            })
    }

    fn evaluate(&self, board: &str) -> Result<Evaluation, Failure> {
        let path = self.project.board_path(board);
        if !path.is_file() {
            let known: Vec<String> = self
                .project
                .board_files()
                .unwrap_or_default()
                .iter()
                .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().to_string()))
                .collect();
            return Err(Failure::usage(format!(
                "error: no board `{board}` ({} does not exist)\n  = help: boards here: {}",
                path.display(),
                known.join(", ")
            )));
        }
        dsl::evaluate(&self.project, &path).map_err(|d| self.diagnostics(d))
    }

    fn diagnostics(&self, d: Diagnostics) -> Failure {
        let n = d.0.len();
        Failure::usage(format!(
            "{}\nkiln: {n} error{} in recipes or boards",
            d.render(&self.project.root),
            if n == 1 { "" } else { "s" }
        ))
    }

    fn plan(&self, eval: &Evaluation, roots: &[(String, Span)]) -> Result<Plan, Failure> {
        graph::plan(eval, roots).map_err(|d| self.diagnostics(d))
    }
}

fn expand_home(s: &str) -> String {
    match (s.strip_prefix("~/"), std::env::var("HOME")) {
        (Some(rest), Ok(home)) => format!("{home}/{rest}"),
        _ => s.to_string(),
    }
}

/// What building a board means: its packages, its kernel and its bootloader.
fn board_roots(eval: &Evaluation) -> Vec<(String, Span)> {
    let b = &eval.board;
    let mut roots: Vec<(String, Span)> = b
        .packages
        .iter()
        .map(|p| {
            let span = b.package_spans.get(p).cloned();
            (p.clone(), span.unwrap_or_else(|| b.span.clone()))
        })
        .collect();
    let boot = b.kernel.iter().map(|k| (&k.recipe, &k.span));
    let boot = boot.chain(b.bootloader.iter().map(|l| (&l.recipe, &l.span)));
    for (name, span) in boot {
        if !roots.iter().any(|(n, _)| n == name) {
            roots.push((name.clone(), span.clone()));
        }
    }
    roots
}

fn recipe_root(
    s: &Session,
    eval: &Evaluation,
    recipe: &str,
) -> Result<Vec<(String, Span)>, Failure> {
    if !eval.recipes.contains_key(recipe) {
        // A command-line mistake, not a place in a file: no span to show.
        let boards: Vec<String> = s
            .project
            .board_files()
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_stem().map(|n| n.to_string_lossy().to_string()))
            .collect();
        let names = eval
            .recipes
            .keys()
            .map(String::as_str)
            .chain(boards.iter().map(String::as_str));
        let hint = match crate::diag::did_you_mean(recipe, names) {
            Some(m) => format!("did you mean `{m}`?"),
            None => format!(
                "recipes: {}; boards: {}",
                eval.recipes.keys().cloned().collect::<Vec<_>>().join(", "),
                boards.join(", ")
            ),
        };
        return Err(Failure::usage(format!(
            "error: `{recipe}` is neither a recipe in {} nor a board in {}\n  = help: {hint}",
            s.project.rel(&s.project.recipes_dir()).display(),
            s.project.rel(&s.project.boards_dir()).display(),
        )));
    }
    Ok(vec![(
        recipe.to_string(),
        eval.recipes[recipe].span.clone(),
    )])
}

fn run(cli: Cli) -> CliResult {
    let s = Session::open(&cli)?;
    match &cli.command {
        Command::Build {
            targets,
            board,
            keep_going,
            jobs,
            no_image,
        } => cmd_build(&s, targets, board.as_deref(), *keep_going, *jobs, *no_image),
        Command::Show { recipe, board } => cmd_show(&s, recipe, board.as_deref()),
        Command::Graph { board, format } => cmd_graph(&s, board.as_deref(), *format),
        Command::Why { recipe, board } => cmd_why(&s, recipe, board.as_deref()),
        Command::Log { recipe, board } => cmd_log(&s, recipe, board.as_deref()),
        Command::Gc { max_age_days } => cmd_gc(&s, *max_age_days),
        Command::Check => cmd_check(&s),
        Command::Sources => cmd_sources(&s),
        Command::Run {
            board,
            persist,
            ssh_port,
            api_port,
            dry_run,
            image,
            qemu_args,
        } => {
            let opts = crate::run::RunOptions {
                image: image.clone(),
                persist: *persist,
                ssh_port: *ssh_port,
                api_port: *api_port,
                extra: qemu_args.clone(),
            };
            cmd_run(&s, board.as_deref(), &opts, *dry_run)
        }
        Command::Cache { what } => cache::run(&s, what),
        Command::Sandbox { .. } | Command::Fs { .. } => Ok(()),
    }
}

fn cmd_run(
    s: &Session,
    board: Option<&str>,
    opts: &crate::run::RunOptions,
    dry_run: bool,
) -> CliResult {
    let board = s.board_name(board)?;
    let eval = s.evaluate(&board)?;
    let out_dir = s.project.root.join("out");
    let mut cmd = crate::run::command(&eval.board, &out_dir, opts)
        .map_err(|e| Failure::usage(format!("error: {e}\n  = help: {}", e.help())))?;
    if dry_run {
        let args: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        println!("{}", args.join(" "));
        return Ok(());
    }
    let status = cmd
        .status()
        .map_err(|e| Failure::usage(format!("error: cannot start QEMU: {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(Failure {
            message: format!("kiln run: QEMU exited with {status}"),
            code: code.unwrap_or(1).clamp(1, 255) as u8,
        }),
    }
}

fn cmd_fs(what: &FsCommand) -> CliResult {
    use crate::mkfs;
    let fail = |e: String| Failure::build(format!("error: {e}"));
    match what {
        FsCommand::Erofs {
            dir,
            out,
            compress,
            label,
        } => {
            let c = match compress.as_str() {
                "lz4hc" => kiln_erofs::Compression::Lz4hc { level: 9 },
                "lz4" => kiln_erofs::Compression::Lz4,
                "none" => kiln_erofs::Compression::None,
                other => {
                    return Err(Failure::usage(format!(
                        "error: unknown compression `{other}`\n  = help: use lz4hc, lz4 or none"
                    )))
                }
            };
            let s = mkfs::erofs(dir, out, c, label.clone()).map_err(fail)?;
            println!("{}: {} bytes, {} inodes", out.display(), s.bytes, s.inodes);
        }
        FsCommand::Ext4 {
            dir,
            out,
            size_mib,
            label,
        } => {
            let s = mkfs::ext4(dir, out, size_mib * kiln_disk::MIB, label).map_err(fail)?;
            println!(
                "{}: {} blocks, UUID {}",
                out.display(),
                s.blocks,
                s.uuid_string()
            );
        }
        FsCommand::Disk {
            out,
            root,
            boot,
            state,
            data,
            boot_mib,
            root_mib,
            state_mib,
            data_mib,
            gpt,
        } => {
            let partitions = crate::model::PartitionLayout {
                table: if *gpt { "gpt" } else { "mbr" }.into(),
                boot_mib: *boot_mib,
                root_mib: *root_mib,
                state_mib: *state_mib,
                data_mib: *data_mib,
                ..crate::model::PartitionLayout::default()
            };
            let dirs = mkfs::DiskDirs {
                boot: boot.as_deref(),
                root,
                state: state.as_deref(),
                data: data.as_deref(),
            };
            let s = mkfs::disk(&dirs, &partitions, out).map_err(fail)?;
            println!(
                "{}: {} bytes, sha256 {}",
                out.display(),
                s.size_bytes,
                kiln_disk::hex(&s.sha256)
            );
        }
    }
    Ok(())
}

fn is_board(s: &Session, target: &str) -> bool {
    target.ends_with(".rhai") || s.project.board_path(target).is_file()
}

fn context<'a>(
    s: &'a Session,
    eval: &'a Evaluation,
    plan: &'a Plan,
    store: &'a Store,
    remote: Option<&'a Remote>,
) -> Result<Context<'a>, Failure> {
    Context::new(&s.project, eval, plan, store, remote)
        .map_err(|e| Failure::usage(format!("error: {e}")))
}

fn cmd_build(
    s: &Session,
    targets: &[String],
    board: Option<&str>,
    keep_going: bool,
    jobs: Option<usize>,
    no_image: bool,
) -> CliResult {
    let (board_name, recipes): (String, Vec<&str>) = match targets {
        [one] if board.is_none() && is_board(s, one) => (one.clone(), Vec::new()),
        _ => (
            s.board_name(board)?,
            targets.iter().map(String::as_str).collect(),
        ),
    };
    let eval = s.evaluate(&board_name)?;
    let roots = if recipes.is_empty() {
        board_roots(&eval)
    } else {
        let mut roots = Vec::new();
        for r in &recipes {
            roots.extend(recipe_root(s, &eval, r)?);
        }
        roots
    };
    let plan = s.plan(&eval, &roots)?;
    let store = s.store()?;
    let _lock = store
        .lock_shared()
        .map_err(|e| Failure::usage(format!("error: {e}")))?;
    let progress = Progress::new(Mode::detect(s.json));
    let remote = s.remote_for_build(&progress)?;
    let ctx = context(s, &eval, &plan, &store, remote.as_ref())?;
    let exe = std::env::current_exe()
        .map_err(|e| Failure::usage(format!("error: cannot find the kiln executable: {e}")))?;
    let jobs = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    let opts = Options {
        jobs,
        keep_going,
        mirrors: s.mirrors.clone(),
        offline: s.offline,
        sandbox_helper: exe,
    };
    let report = build::run(&ctx, &opts, &progress);
    let board_build = recipes.is_empty();
    let failed = report.failed();
    // The image is the board's last node: it needs every package.
    let image = (board_build && !no_image && failed.is_empty()).then(|| {
        let out_dir = s.project.root.join("out");
        image::run(&ctx, &report.results, &out_dir, &progress)
    });
    progress.finish();
    if let Some(remote) = &remote {
        cache::record_stats(&store, remote, &format!("build {board_name}"));
    }

    // Every build is a GC root, so `kiln gc` keeps what was just built.
    let mut root = Root {
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        keys: report.results.values().filter_map(|r| r.key()).collect(),
        outputs: report.results.values().filter_map(|r| r.output()).collect(),
    };
    if let Some(Ok(img)) = &image {
        root.keys.push(img.key);
        root.outputs.push(img.output);
    }
    let root_name = if board_build {
        eval.board.name.clone()
    } else {
        format!("{}.{}", eval.board.name, recipes.join("+"))
    };
    if let Err(e) = store.write_root(&root_name, &root) {
        eprintln!("warning: cannot record GC root {root_name}: {e}");
    }

    if !failed.is_empty() {
        return Err(Failure::build(format!(
            "error: {} recipe{} failed: {}",
            failed.len(),
            if failed.len() == 1 { "" } else { "s" },
            failed
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let linked: Vec<&str> = if board_build {
        plan.roots.iter().map(String::as_str).collect()
    } else {
        recipes.clone()
    };
    for r in &linked {
        if let Some(out) = report.results.get(*r).and_then(|x| x.output()) {
            let path = store
                .materialize(&out)
                .map_err(|e| Failure::build(format!("error: {e}")))?;
            let link = s.project.root.join("out").join(&eval.board.name).join(r);
            link_result(&path, &link);
            if !s.json && !board_build {
                println!("{}", path.display());
            }
        }
    }
    match image {
        Some(Ok(img)) => {
            if !s.json {
                print_image(s, &img);
            }
            Ok(())
        }
        Some(Err(e)) => {
            let board_file = s.project.rel(&eval.board.span.file).display().to_string();
            let mut msg = format!("error: image for board `{}`: {e}", eval.board.name);
            if let Some(help) = e.help(&board_file) {
                msg.push_str(&format!("\n  = help: {help}"));
            }
            msg.push_str(
                "\n  = note: no image was written; out/ still holds the previous one, if any",
            );
            Err(Failure::build(msg))
        }
        None => Ok(()),
    }
}

/// The image summary: where the files are and what is on the disk.
fn print_image(s: &Session, img: &image::ImageResult) {
    let m = &img.manifest;
    let rel = |p: &Path| s.project.rel(p).display().to_string();
    println!(
        "{} ({} MiB, sha256 {})",
        rel(&img.published.image),
        m.image.size / kiln_disk::MIB,
        m.image.sha256
    );
    println!(
        "{} ({} bytes)",
        rel(&img.published.compressed),
        m.compressed.size
    );
    println!("{}", rel(&img.published.manifest));
    for p in &m.partitions {
        println!(
            "  p{} {:<12} {:<5} {:>5} MiB at {:>5} MiB  {}",
            p.number,
            p.label,
            p.filesystem,
            p.size / kiln_disk::MIB,
            p.start / kiln_disk::MIB,
            &p.sha256[..16]
        );
    }
}

/// `out/<board>/<recipe>` → the output in the store, like Nix's `result`.
fn link_result(target: &Path, link: &Path) {
    if let Some(parent) = link.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let tmp = link.with_extension("kiln-tmp");
    let _ = std::fs::remove_file(&tmp);
    if std::os::unix::fs::symlink(target, &tmp).is_ok() {
        let _ = std::fs::rename(&tmp, link);
    }
}

/// Evaluates `board`, plans `recipe` and runs `f` with the build context.
fn with_recipe(
    s: &Session,
    recipe: &str,
    board: Option<&str>,
    f: impl FnOnce(&Context, &str) -> CliResult,
) -> CliResult {
    with_plan(s, board, |eval| recipe_root(s, eval, recipe), f)
}

/// Evaluates the board, plans the roots `roots` picks, and runs `f` with the
/// build context (without building anything).
fn with_plan(
    s: &Session,
    board: Option<&str>,
    roots: impl FnOnce(&Evaluation) -> Result<Vec<(String, Span)>, Failure>,
    f: impl FnOnce(&Context, &str) -> CliResult,
) -> CliResult {
    let board = s.board_name(board)?;
    let eval = s.evaluate(&board)?;
    let roots = roots(&eval)?;
    let plan = s.plan(&eval, &roots)?;
    let store = s.store()?;
    let ctx = context(s, &eval, &plan, &store, None)?;
    f(&ctx, &board)
}

fn cmd_show(s: &Session, recipe: &str, board: Option<&str>) -> CliResult {
    with_recipe(s, recipe, board, |ctx, _| show(ctx, recipe))
}

fn show(ctx: &Context, recipe: &str) -> CliResult {
    let (eval, plan) = (ctx.eval, ctx.plan);
    let drv = ctx.derivations();
    let keys = ctx.resolve_keys();
    let r = &eval.recipes[recipe];
    let (inputs, key, output) = match keys.get(recipe) {
        Some((i, k, o)) => (Some(i.clone()), Some(k.to_hex()), o.map(|o| o.to_hex())),
        None => (None, None, None),
    };
    let out = serde_json::json!({
        "recipe": r,
        "board": eval.board.name,
        "derivation": drv.get(recipe),
        "key": key,
        "output": output,
        "build_deps": plan.build_deps(recipe),
        "runtime_deps": plan.deps_of(recipe, graph::DepKind::Runtime),
        "inputs": inputs.unwrap_or_else(|| ctx.inputs(recipe, BTreeMap::new())),
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}

fn cmd_graph(s: &Session, board: Option<&str>, format: GraphFormat) -> CliResult {
    with_plan(
        s,
        board,
        |eval| Ok(board_roots(eval)),
        |ctx, _| graph(ctx, format),
    )
}

fn graph(ctx: &Context, format: GraphFormat) -> CliResult {
    let (eval, plan) = (ctx.eval, ctx.plan);
    let drv = ctx.derivations();
    match format {
        GraphFormat::Dot => print!("{}", plan.to_dot(&drv)),
        GraphFormat::Json => {
            let keys = ctx.resolve_keys();
            let nodes: Vec<serde_json::Value> = plan
                .order
                .iter()
                .map(|n| {
                    let (key, output) = match keys.get(n) {
                        Some((_, k, o)) => (Some(k.to_hex()), o.map(|o| o.to_hex())),
                        None => (None, None),
                    };
                    serde_json::json!({
                        "name": n,
                        "version": eval.recipes[n].version,
                        "derivation": drv.get(n),
                        "key": key,
                        "output": output,
                        "build_deps": plan.build_deps(n),
                        "runtime_deps": plan.deps_of(n, graph::DepKind::Runtime),
                    })
                })
                .collect();
            let out = serde_json::json!({ "board": eval.board.name, "roots": plan.roots, "nodes": nodes });
            println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        }
    }
    Ok(())
}

fn cmd_why(s: &Session, recipe: &str, board: Option<&str>) -> CliResult {
    with_recipe(s, recipe, board, |ctx, board| why(ctx, recipe, board))
}

fn why(ctx: &Context, recipe: &str, board: &str) -> CliResult {
    let plan = ctx.plan;
    let Some(last) = ctx.last_inputs(recipe) else {
        println!("{recipe}: never built for board {board} with this store; `kiln build {recipe} --board {board}` builds it");
        return Ok(());
    };
    let keys = ctx.resolve_keys();
    let Some((now, key, output)) = keys.get(recipe) else {
        let unbuilt: Vec<String> = plan
            .build_deps(recipe)
            .into_iter()
            .filter(|d| keys.get(d).is_none_or(|k| k.2.is_none()))
            .collect();
        println!(
            "{recipe}: its key can't be known yet: build dependencies not built with their current inputs: {}",
            unbuilt.join(", ")
        );
        for d in unbuilt {
            println!("  (run `kiln why {d} --board {board}`)");
        }
        return Ok(());
    };
    let changes = key::diff(&last, now);
    if changes.is_empty() {
        let state = if output.is_some() {
            "cached"
        } else {
            "not in the cache (it was removed?)"
        };
        println!(
            "{recipe}: no inputs changed since the last build; key {} is {state}",
            key.to_hex()
        );
        return Ok(());
    }
    println!(
        "{recipe}: {} input{} changed since the last build:",
        changes.len(),
        if changes.len() == 1 { "" } else { "s" }
    );
    for c in changes {
        let show = |v: &Option<serde_json::Value>| match v {
            Some(v) => shorten(&v.to_string()),
            None => "(absent)".into(),
        };
        println!(
            "  {}:\n    was {}\n    now {}",
            c.path,
            show(&c.old),
            show(&c.new)
        );
    }
    Ok(())
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 200 {
        format!("{}…", s.chars().take(200).collect::<String>())
    } else {
        s.to_string()
    }
}

fn cmd_log(s: &Session, recipe: &str, board: Option<&str>) -> CliResult {
    let store = s.store()?;
    let boards: Vec<String> = match board {
        Some(b) => vec![b.to_string()],
        None => std::fs::read_dir(store.logs_dir())
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().to_string())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let found: Vec<(String, PathBuf)> = boards
        .into_iter()
        .map(|b| {
            let p = build::log_path(&store, &b, recipe);
            (b, p)
        })
        .filter(|(_, p)| p.is_file())
        .collect();
    match found.as_slice() {
        [] => Err(Failure::usage(format!(
            "error: no build log for `{recipe}` in {}\n  = help: build it first",
            store.logs_dir().display()
        ))),
        [(_, p)] => {
            let text = std::fs::read(p)
                .map_err(|e| Failure::usage(format!("error: {}: {e}", p.display())))?;
            use std::io::Write;
            let _ = std::io::stdout().write_all(&text);
            Ok(())
        }
        many => Err(Failure::usage(format!(
            "error: `{recipe}` was built for several boards: {}\n  = help: pass --board",
            many.iter()
                .map(|(b, _)| b.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn cmd_gc(s: &Session, days: u64) -> CliResult {
    let store = s.store()?;
    let report = store
        .gc(Duration::from_secs(days * 86_400))
        .map_err(|e| Failure::usage(format!("error: gc: {e}")))?;
    println!(
        "kiln gc: removed {} blobs ({} bytes), {} cache entries, {} outputs, {} old roots; kept {} blobs",
        report.blobs_removed,
        report.bytes_freed,
        report.ac_removed,
        report.outputs_removed,
        report.roots_removed,
        report.blobs_kept
    );
    Ok(())
}

/// Evaluates every board (each evaluates every recipe) and plans it.
fn evaluate_all(s: &Session) -> Result<Vec<Evaluation>, Failure> {
    let boards = s
        .project
        .board_files()
        .map_err(|e| Failure::usage(format!("error: cannot list boards: {e}")))?;
    let mut evals = Vec::new();
    let mut errors = Vec::new();
    for b in boards {
        match dsl::evaluate(&s.project, &b) {
            Ok(e) => match graph::plan(&e, &board_roots(&e)) {
                Ok(_) => evals.push(e),
                Err(d) => errors.extend(d.0),
            },
            Err(d) => errors.extend(d.0),
        }
    }
    // The same bad recipe is reported once, not once per board.
    let mut seen = std::collections::BTreeSet::new();
    errors.retain(|d| seen.insert(d.to_string()));
    if errors.is_empty() {
        Ok(evals)
    } else {
        Err(s.diagnostics(Diagnostics(errors)))
    }
}

fn cmd_check(s: &Session) -> CliResult {
    let evals = evaluate_all(s)?;
    let recipes: std::collections::BTreeSet<&String> =
        evals.iter().flat_map(|e| e.recipes.keys()).collect();
    println!(
        "kiln check: {} boards and {} recipes evaluate cleanly",
        evals.len(),
        recipes.len()
    );
    Ok(())
}

fn cmd_sources(s: &Session) -> CliResult {
    let evals = evaluate_all(s)?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for e in &evals {
        for r in e.recipes.values() {
            for src in &r.sources {
                if let crate::model::Source::Remote {
                    url, hash, debian, ..
                } = src
                {
                    let (algo, hex) = match hash {
                        crate::model::SourceHash::Sha256(h) => ("sha256", h),
                        crate::model::SourceHash::Blake3(h) => ("blake3", h),
                    };
                    if seen.insert((r.name.clone(), hex.clone())) {
                        out.push(serde_json::json!({
                            "recipe": r.name, "url": url, "algo": algo, "hash": hex, "debian": debian,
                        }));
                    }
                }
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    Ok(())
}
