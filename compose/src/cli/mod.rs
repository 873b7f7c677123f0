//! The `kiln` command line: arguments in, one call into the stages out.
//! Each command lives in its own module; none of them knows what a kind of
//! node is (the rules do) or how a node is built (the engine does).

mod build;
mod cache;
mod fs;
mod inspect;
mod project;
mod run;
mod session;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use kiln_image::policy::DEFAULT_SIZES;
use serde::Deserialize;

use session::Session;

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
pub(crate) enum FsCommand {
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
        #[arg(long, default_value_t = DEFAULT_SIZES.boot_mib)]
        boot_mib: u64,
        #[arg(long, default_value_t = DEFAULT_SIZES.root_mib)]
        root_mib: u64,
        #[arg(long, default_value_t = DEFAULT_SIZES.state_mib)]
        state_mib: u64,
        #[arg(long, default_value_t = DEFAULT_SIZES.data_mib)]
        data_mib: u64,
        #[arg(long)]
        gpt: bool,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum GraphFormat {
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
    pub(crate) fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }
    pub(crate) fn build(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

pub(crate) type CliResult = Result<(), Failure>;

pub fn main() -> ExitCode {
    // Every file and directory Kiln makes (unpacked sources, package sets,
    // build trees, store entries, out/) gets the same modes whoever runs
    // it: outputs must not depend on the caller's umask, and the sandbox
    // sets the same one for the build steps.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    let cli = Cli::parse();
    if let Command::Sandbox { spec } = &cli.command {
        return ExitCode::from(kiln_sandbox::sandbox_main(spec).clamp(0, 255) as u8);
    }
    let result = match &cli.command {
        Command::Fs { what } => fs::run(what),
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

fn run(cli: Cli) -> CliResult {
    let s = Session::open(&cli)?;
    match &cli.command {
        Command::Build {
            targets,
            board,
            keep_going,
            jobs,
            no_image,
        } => build::run(&s, targets, board.as_deref(), *keep_going, *jobs, *no_image),
        Command::Show { recipe, board } => inspect::show(&s, recipe, board.as_deref()),
        Command::Graph { board, format } => inspect::graph(&s, board.as_deref(), *format),
        Command::Why { recipe, board } => inspect::why(&s, recipe, board.as_deref()),
        Command::Log { recipe, board } => inspect::log(&s, recipe, board.as_deref()),
        Command::Gc { max_age_days } => project::gc(&s, *max_age_days),
        Command::Check => project::check(&s),
        Command::Sources => project::sources(&s),
        Command::Run {
            board,
            persist,
            ssh_port,
            api_port,
            dry_run,
            image,
            qemu_args,
        } => {
            let opts = crate::qemu::RunOptions {
                image: image.clone(),
                persist: *persist,
                ssh_port: *ssh_port,
                api_port: *api_port,
                extra: qemu_args.clone(),
            };
            run::run(&s, board.as_deref(), &opts, *dry_run)
        }
        Command::Cache { what } => cache::run(&s, what),
        Command::Sandbox { .. } | Command::Fs { .. } => Ok(()),
    }
}
