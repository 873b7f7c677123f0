//! The boot partition's tree: the kernel's and the bootloader's `/boot`
//! files, and what balenaOS keeps there.

use std::fs;

use kiln_fstree::{Data, Kind, Node, Tree};
use kiln_rootfs::OsInfo;
use kiln_store::Store;

use crate::error::ImageError;
use crate::policy;
use crate::write::io_err;
use crate::{digest, ImageInputs};

/// The boot partition: the kernel's and the bootloader's `/boot` files,
/// plus what balenaOS keeps there (config.json, the A/B env, os-release,
/// device-type.json, system-connections/).
pub(crate) fn tree(store: &Store, inputs: &ImageInputs, os: &OsInfo) -> Result<Tree, ImageError> {
    let mut tree = Tree::new();
    let mut owners: std::collections::BTreeMap<String, String> = Default::default();
    let mut add =
        |tree: &mut Tree, path: &str, node: Node, owner: &str| -> Result<(), ImageError> {
            if let Some(first) = owners.get(path) {
                if !matches!(node.kind, Kind::Dir) {
                    return Err(ImageError::BootConflict {
                        path: path.into(),
                        first: first.clone(),
                        second: owner.into(),
                    });
                }
                return Ok(());
            }
            owners.insert(path.into(), owner.into());
            Ok(tree.insert(path, node)?)
        };

    for input in inputs.kernel.iter().chain(inputs.bootloader.iter()) {
        let output = digest(&input.output)?;
        let manifest = store.get_manifest(&output)?;
        let files = store.materialize(&output)?;
        for e in &manifest.entries {
            let Some(rel) = e.path.strip_prefix("boot/") else {
                continue;
            };
            let path = format!("/{rel}");
            let node = match e.kind {
                kiln_store::EntryKind::Dir => Node::dir(0o755),
                kiln_store::EntryKind::File { .. } | kiln_store::EntryKind::Hardlink { .. } => {
                    let host = files.join(&e.path);
                    Node::file(Data::Path(host), 0o644)
                }
                kiln_store::EntryKind::Symlink { .. } => {
                    // FAT has no symlinks: the file the link names is copied.
                    let host = files.join(&e.path);
                    let real = fs::canonicalize(&host).map_err(io_err("resolving", &host))?;
                    if !real.starts_with(&files) {
                        return Err(ImageError::Io {
                            action: "copying to the boot partition",
                            path: host,
                            source: std::io::Error::other("a symlink leading out of its package"),
                        });
                    }
                    Node::file(Data::Path(real), 0o644)
                }
            };
            add(&mut tree, &path, node, &input.name)?;
        }
    }

    let config = policy::config_json(&inputs.board, &inputs.config_json);
    let name = if inputs.description.is_empty() {
        &inputs.board
    } else {
        &inputs.description
    };
    let device_type = serde_json::json!({
        "slug": inputs.board,
        "name": name,
        "arch": inputs.target.arch,
        "kernel": inputs.kernel.as_ref().map(|k| &k.name),
        "bootloader": inputs.bootloader.as_ref().map(|b| &b.name),
        "partitionTable": inputs.layout.table.name(),
    });
    let text = |what: &'static str, v: &serde_json::Value| -> Result<Vec<u8>, ImageError> {
        let mut s =
            serde_json::to_vec_pretty(v).map_err(|source| ImageError::Encode { what, source })?;
        s.push(b'\n');
        Ok(s)
    };
    let generated: [(&str, Vec<u8>); 4] = [
        (
            "/config.json",
            text("config.json", &serde_json::Value::Object(config))?,
        ),
        ("/device-type.json", text("device-type.json", &device_type)?),
        ("/os-release", kiln_rootfs::os_release(os).into_bytes()),
        (
            &format!("/{}", policy::BOOT_ENV_FILE),
            policy::BOOT_ENV.as_bytes().to_vec(),
        ),
    ];
    for (path, bytes) in generated {
        add(
            &mut tree,
            path,
            Node::file(Data::Bytes(bytes), 0o644),
            "kiln",
        )?;
    }
    add(
        &mut tree,
        policy::SYSTEM_CONNECTIONS,
        Node::dir(0o755),
        "kiln",
    )?;
    Ok(tree)
}
