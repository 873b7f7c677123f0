//! The image node: the last node of a board's DAG.
//!
//! Its inputs are the outputs of the board's packages (closed over their
//! runtime dependencies), of its kernel and bootloader, and the board's
//! image fields (OS identity, partition sizes, config.json defaults). Its
//! key is a blake3 over those plus a fingerprint of the image writers'
//! source (`compose/build.rs`), so a change to any writer is a new key and
//! nothing else is. Like a recipe, a hit in the action cache skips all
//! work; the store keeps the compressed image and its manifest, and
//! [`publish`] puts them in `out/`.
//!
//! Data flows one way: package outputs → [`kiln_rootfs::assemble`] →
//! strip → EROFS root, ext4 state and data, FAT boot → [`kiln_disk::assemble`]
//! → the store → `out/`.

mod assemble;
mod error;
pub mod manifest;
pub mod publish;
pub mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use kiln_store::{ActionResult, Digest};
use serde::Serialize;

use crate::build::{Context, Event, Events, NodeResult};
use crate::graph::DepKind;
use crate::model::{OsRelease, PartitionLayout, Target};
use crate::toolchain::Fingerprint;

pub use error::ImageError;
pub use manifest::ImageManifest;
pub use publish::Published;

/// Bumped when the meaning of the image inputs changes.
pub const IMAGE_SCHEMA: &str = "kiln-image-v1";
/// blake3 of the image writers' source (see `compose/build.rs`).
pub const WRITERS: &str = env!("KILN_IMAGE_WRITERS");
/// The name the image node has in events, logs and `kiln log`.
pub const NODE: &str = "image";

/// File names inside the image node's store output.
pub const STORED_IMAGE: &str = "disk.img.zst";
pub const STORED_MANIFEST: &str = "image.json";

/// One built recipe as the image sees it.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInput {
    pub name: String,
    pub version: String,
    pub license: String,
    pub key: String,
    pub output: String,
    /// Rootfs packages only: what the image generates from them.
    pub state: Vec<String>,
    pub units: Vec<String>,
}

/// Everything that can change the image's bytes; its canonical JSON is
/// hashed into the key.
#[derive(Clone, Debug, Serialize)]
pub struct ImageInputs {
    pub schema: &'static str,
    pub writers: &'static str,
    pub board: String,
    pub description: String,
    pub target: Target,
    pub os: OsRelease,
    pub partitions: PartitionLayout,
    pub config_json: serde_json::Map<String, serde_json::Value>,
    /// The stripping is done with the toolchain's `strip`.
    pub strip: String,
    pub toolchain: Fingerprint,
    pub epoch: u64,
    pub packages: Vec<ImageInput>,
    pub kernel: Option<ImageInput>,
    pub bootloader: Option<ImageInput>,
}

impl ImageInputs {
    pub fn key(&self) -> Digest {
        // Struct fields serialize in declaration order and maps are sorted
        // (serde_json without `preserve_order`): the encoding is canonical.
        Digest::of(&serde_json::to_vec(self).unwrap_or_default())
    }
}

/// How the image node ended.
#[derive(Clone, Debug)]
pub struct ImageResult {
    pub key: Digest,
    /// The stored output (compressed image and manifest).
    pub output: Digest,
    pub cached: bool,
    pub published: Published,
    pub manifest: ImageManifest,
}

/// The rootfs packages of a board: its `packages` closed over their
/// runtime dependencies, sorted.
pub fn rootfs_packages(ctx: &Context) -> Vec<String> {
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut todo: Vec<String> = ctx.eval.board.packages.clone();
    while let Some(p) = todo.pop() {
        if seen.insert(p.clone()) {
            todo.extend(ctx.plan.deps_of(&p, DepKind::Runtime));
        }
    }
    seen.into_iter().collect()
}

/// The image inputs, given the results of building the board's recipes.
pub fn inputs(
    ctx: &Context,
    results: &BTreeMap<String, NodeResult>,
) -> Result<ImageInputs, ImageError> {
    let board = &ctx.eval.board;
    let input = |name: &str, rootfs: bool| -> Result<ImageInput, ImageError> {
        let r = results.get(name);
        let (Some(key), Some(output)) =
            (r.and_then(NodeResult::key), r.and_then(NodeResult::output))
        else {
            return Err(ImageError::NotBuilt {
                package: name.to_string(),
            });
        };
        let recipe = ctx.recipe(name);
        Ok(ImageInput {
            name: name.to_string(),
            version: recipe.version.clone(),
            license: recipe.license.clone(),
            key: key.to_hex(),
            output: output.to_hex(),
            state: if rootfs {
                recipe.state.clone()
            } else {
                Vec::new()
            },
            units: if rootfs {
                recipe.units.clone()
            } else {
                Vec::new()
            },
        })
    };
    let packages = rootfs_packages(ctx)
        .iter()
        .map(|p| input(p, true))
        .collect::<Result<Vec<_>, _>>()?;
    let kernel = board
        .kernel
        .as_ref()
        .map(|k| input(&k.recipe, false))
        .transpose()?;
    let bootloader = board
        .bootloader
        .as_ref()
        .map(|b| input(&b.recipe, false))
        .transpose()?;
    Ok(ImageInputs {
        schema: IMAGE_SCHEMA,
        writers: WRITERS,
        board: board.name.clone(),
        description: board.description.clone(),
        target: board.target.clone(),
        os: board.os.clone(),
        partitions: board.partitions.clone(),
        config_json: board.config_json.clone(),
        strip: board.toolchain.strip.clone(),
        toolchain: ctx.fingerprint.clone(),
        epoch: crate::toolchain::SOURCE_DATE_EPOCH.parse().unwrap_or(0),
        packages,
        kernel,
        bootloader,
    })
}

/// Makes (or finds in the store) the board's image and publishes it to
/// `out_dir`. Nothing is left half-written: the work happens in a scratch
/// directory that is removed whatever happens, the store entry is written
/// last, and `out/` files are replaced by rename.
pub fn run(
    ctx: &Context,
    results: &BTreeMap<String, NodeResult>,
    out_dir: &Path,
    events: &dyn Events,
) -> Result<ImageResult, ImageError> {
    let inputs = inputs(ctx, results)?;
    let key = inputs.key();
    let board = &ctx.eval.board.name;
    let store = ctx.store;

    let hit = match store.ac_get(&key)? {
        Some(hit) => Some((hit.output, false)),
        None => crate::remote::fetch(ctx.remote, store, events, NODE, &key).map(|o| (o, true)),
    };
    if let Some((output, remote)) = hit {
        let stored = store.materialize(&output)?;
        let manifest = read_manifest(&stored)?;
        let published = publish::publish(out_dir, board, &key.to_hex(), &stored, None)?;
        if !remote {
            events.event(&Event::Cached {
                recipe: NODE.into(),
                key: key.to_hex(),
                output: output.to_hex(),
            });
        }
        return Ok(ImageResult {
            key,
            output,
            cached: true,
            published,
            manifest,
        });
    }

    let started = Instant::now();
    let work = crate::build::WorkDir::new(store, NODE, &key).map_err(|source| ImageError::Io {
        action: "creating",
        path: store.root().join("work"),
        source,
    })?;
    let log_path = work.path().join("build.log");
    events.event(&Event::Started {
        recipe: NODE.into(),
        key: key.to_hex(),
        log: log_path.clone(),
    });
    let mut log = assemble::Log::create(&log_path)?;
    let result = assemble::assemble(ctx, &inputs, &key, work.path(), &mut log).and_then(|made| {
        let manifest = store.ingest_tree(&made.out_dir, &[])?;
        let output = store.put_manifest(&manifest)?;
        let log_blob = store.put_file(&log_path).ok().map(|(d, _)| d);
        store.ac_put(
            &key,
            &ActionResult {
                output,
                log: log_blob,
            },
        )?;
        let stored = store.materialize(&output)?;
        let published = publish::publish(
            out_dir,
            board,
            &key.to_hex(),
            &stored,
            Some(&made.disk_image),
        )?;
        Ok((output, published, made.manifest))
    });
    // The log is kept for `kiln log image` whether or not the image was made.
    let _ = log.finish(&crate::build::log_path(store, board, NODE));
    match result {
        Ok((output, published, manifest)) => {
            events.event(&Event::Built {
                recipe: NODE.into(),
                key: key.to_hex(),
                output: output.to_hex(),
                seconds: started.elapsed().as_secs_f64(),
            });
            crate::remote::push(ctx.remote, store, events, NODE, &key);
            Ok(ImageResult {
                key,
                output,
                cached: false,
                published,
                manifest,
            })
        }
        Err(e) => {
            events.event(&Event::Failed {
                recipe: NODE.into(),
                key: key.to_hex(),
                error: e.to_string(),
            });
            Err(e)
        }
    }
}

fn read_manifest(stored: &Path) -> Result<ImageManifest, ImageError> {
    let path: PathBuf = stored.join(STORED_MANIFEST);
    let bytes = std::fs::read(&path).map_err(|source| ImageError::Io {
        action: "reading",
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ImageError::Io {
        action: "parsing",
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}
