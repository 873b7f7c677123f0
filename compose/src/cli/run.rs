//! `kiln run`: boot the board's built image in QEMU.

use super::session::Session;
use super::{CliResult, Failure};

pub(super) fn run(
    s: &Session,
    board: Option<&str>,
    opts: &crate::qemu::RunOptions,
    dry_run: bool,
) -> CliResult {
    let board = s.board_name(board)?;
    let eval = s.evaluate(&board)?;
    let out_dir = s.project.root.join("out");
    let mut cmd = crate::qemu::command(&eval.board, &out_dir, opts)
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
