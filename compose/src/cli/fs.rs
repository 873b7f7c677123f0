//! `kiln fs`: one of Kiln's writers, or a whole disk, on plain directories.

use kiln_image::{mkfs, policy};

use super::{CliResult, Failure, FsCommand};

pub(super) fn run(what: &FsCommand) -> CliResult {
    let fail = |e: kiln_image::ImageError| Failure::build(format!("error: {e}"));
    match what {
        FsCommand::Erofs {
            dir,
            out,
            compress,
            label,
        } => {
            let c = match compress.as_str() {
                "lz4hc" => policy::ROOT_COMPRESSION,
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
            let spec = policy::layout(&kiln_model::PartitionLayout {
                table: Some(if *gpt { "gpt" } else { "mbr" }.into()),
                boot_mib: Some(*boot_mib),
                root_mib: Some(*root_mib),
                state_mib: Some(*state_mib),
                data_mib: Some(*data_mib),
                ..Default::default()
            });
            let s = mkfs::disk(
                boot.as_deref(),
                root,
                state.as_deref(),
                data.as_deref(),
                &spec,
                out,
            )
            .map_err(fail)?;
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
