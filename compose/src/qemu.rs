//! `kiln run`: boot a board's built image in QEMU, with the machine
//! settings from the board file.
//!
//! The disk is the only boot medium: firmware (the bootloader recipe's
//! output) goes in as `-bios`, never a `-kernel`. The serial console is
//! on stdio, the disk is `-snapshot` unless `--persist`, and host ports
//! reach the guest's SSH (22222) and supervisor API (48484). `kiln run`
//! exits when QEMU does, with its status.

use std::path::{Path, PathBuf};
use std::process::Command;

use kiln_model::Board;

/// The guest ports `kiln run` forwards.
pub const GUEST_SSH: u16 = 22222;
pub const GUEST_API: u16 = 48484;

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub persist: bool,
    pub ssh_port: u16,
    pub api_port: u16,
    /// Another copy of the image to boot (default: `out/<board>.img`).
    pub image: Option<PathBuf>,
    /// Extra QEMU arguments from the command line.
    pub extra: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("board `{board}` has no `qemu` section, so Kiln doesn't know how to boot it")]
    NoQemu { board: String },
    #[error("no image for board `{board}` at {}", image.display())]
    NoImage { board: String, image: PathBuf },
    #[error("the firmware `{firmware}` of board `{board}` is not built ({} is missing)", path.display())]
    NoFirmware {
        board: String,
        firmware: String,
        path: PathBuf,
    },
    #[error("`{binary}` is not installed (not found on PATH)")]
    NoQemuBinary { binary: String },
}

impl RunError {
    pub fn help(&self) -> String {
        match self {
            RunError::NoQemu { .. } => {
                "add `qemu: #{ binary, machine, ... }` to the board (see recipes/README.md)".into()
            }
            RunError::NoImage { board, .. } | RunError::NoFirmware { board, .. } => {
                format!("run `kiln build {board}` first")
            }
            RunError::NoQemuBinary { .. } => {
                "run scripts/setup (it installs qemu-system-x86 and qemu-system-arm)".into()
            }
        }
    }
}

/// Finds `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The QEMU command line for `board`'s image in `out_dir`.
pub fn command(board: &Board, out_dir: &Path, opts: &RunOptions) -> Result<Command, RunError> {
    let q = board.qemu.as_ref().ok_or_else(|| RunError::NoQemu {
        board: board.name.clone(),
    })?;
    let image = opts
        .image
        .clone()
        .unwrap_or_else(|| out_dir.join(format!("{}.img", board.name)));
    if !image.is_file() {
        return Err(RunError::NoImage {
            board: board.name.clone(),
            image,
        });
    }
    let binary = which(&q.binary).ok_or_else(|| RunError::NoQemuBinary {
        binary: q.binary.clone(),
    })?;
    let mut cmd = Command::new(binary);
    cmd.args(["-machine", &q.machine, "-accel", "tcg"]);
    if !q.cpu.is_empty() {
        cmd.args(["-cpu", &q.cpu]);
    }
    cmd.args(["-m", &q.memory_mib.to_string(), "-nographic"]);
    if !q.firmware.is_empty() {
        let loader = board
            .bootloader
            .as_ref()
            .map(|b| b.recipe.as_str())
            .unwrap_or("");
        let path = out_dir.join(&board.name).join(loader).join(&q.firmware);
        if !path.is_file() {
            return Err(RunError::NoFirmware {
                board: board.name.clone(),
                firmware: q.firmware.clone(),
                path,
            });
        }
        cmd.arg("-bios").arg(path);
    }
    let mut drive = format!("file={},format=raw,if={}", image.display(), q.drive);
    if !opts.persist {
        drive.push_str(",snapshot=on");
    }
    cmd.args(["-drive", &drive]);
    cmd.args([
        "-netdev",
        &format!(
            "user,id=net0,hostfwd=tcp:127.0.0.1:{}-:{GUEST_SSH},hostfwd=tcp:127.0.0.1:{}-:{GUEST_API}",
            opts.ssh_port, opts.api_port
        ),
        "-device",
        &format!("{},netdev=net0", q.net),
    ]);
    cmd.args(&q.args);
    cmd.args(&opts.extra);
    Ok(cmd)
}
