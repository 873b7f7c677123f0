//! The image rule: a board's disk image, as one more node. It build-depends
//! on every package of the root filesystem (the board's `packages` closed
//! over runtime dependencies), on the kernel and on the bootloader; its key
//! covers their outputs and keys, the board's image fields and the writers'
//! fingerprint ([`kiln_image::ImageInputs`]).

use std::path::{Path, PathBuf};

use kiln_engine::{Deps, Exec, Executed, Failure, KeyInputs, NodeError, Publish, Rule};
use kiln_image::{ImageError, ImageInput, ImageInputs, ImageManifest, Published, IMAGE_SCHEMA};
use kiln_model::{Board, Fingerprint, Recipe, SOURCE_DATE_EPOCH};

/// The image node's name: in events, logs, work dirs and `kiln log image`.
/// No recipe may take it ([`crate::check`]).
pub const IMAGE: &str = "image";

/// A package as the image needs it, before it is built.
#[derive(Clone, Debug)]
struct Package {
    name: String,
    version: String,
    license: String,
    state: Vec<String>,
    units: Vec<String>,
}

impl Package {
    fn of(r: &Recipe, rootfs: bool) -> Package {
        Package {
            name: r.name.clone(),
            version: r.version.clone(),
            license: r.license.clone(),
            state: if rootfs { r.state.clone() } else { Vec::new() },
            units: if rootfs { r.units.clone() } else { Vec::new() },
        }
    }

    fn input(&self, deps: &Deps) -> Result<ImageInput, ImageError> {
        let d = deps.get(&self.name).ok_or_else(|| ImageError::NotBuilt {
            package: self.name.clone(),
        })?;
        Ok(ImageInput {
            name: self.name.clone(),
            version: self.version.clone(),
            license: self.license.clone(),
            key: d.key.clone(),
            output: d.output.clone(),
            state: self.state.clone(),
            units: self.units.clone(),
        })
    }
}

pub struct ImageRule {
    board: Board,
    /// The board's file, relative to the project, for messages.
    board_file: String,
    fingerprint: Fingerprint,
    packages: Vec<Package>,
    kernel: Option<Package>,
    bootloader: Option<Package>,
    /// `out/`.
    out_dir: PathBuf,
    /// Turns a path into what messages show (relative to the project).
    project_root: PathBuf,
}

impl ImageRule {
    /// The image of `board` from `rootfs` (sorted package names), with the
    /// kernel and bootloader the board names.
    pub fn new(
        board: &Board,
        board_file: String,
        recipe: impl Fn(&str) -> Option<Recipe>,
        rootfs: &[String],
        fingerprint: Fingerprint,
        project_root: &Path,
    ) -> ImageRule {
        let pkg = |name: &str, rootfs: bool| recipe(name).map(|r| Package::of(&r, rootfs));
        ImageRule {
            board: board.clone(),
            board_file,
            fingerprint,
            packages: rootfs.iter().filter_map(|p| pkg(p, true)).collect(),
            kernel: board.kernel.as_ref().and_then(|k| pkg(&k.recipe, false)),
            bootloader: board
                .bootloader
                .as_ref()
                .and_then(|b| pkg(&b.recipe, false)),
            out_dir: project_root.join("out"),
            project_root: project_root.to_path_buf(),
        }
    }

    fn inputs(&self, deps: &Deps) -> Result<ImageInputs, NodeError> {
        let b = &self.board;
        let packages = self
            .packages
            .iter()
            .map(|p| p.input(deps))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.fail(e))?;
        let kernel = self
            .kernel
            .as_ref()
            .map(|p| p.input(deps))
            .transpose()
            .map_err(|e| self.fail(e))?;
        let bootloader = self
            .bootloader
            .as_ref()
            .map(|p| p.input(deps))
            .transpose()
            .map_err(|e| self.fail(e))?;
        Ok(ImageInputs {
            writers: kiln_image::WRITERS,
            board: b.name.clone(),
            description: b.description.clone(),
            target: b.target.clone(),
            os: b.os.clone(),
            layout: kiln_image::policy::layout(&b.partitions),
            config_json: b.config_json.clone(),
            strip: b.toolchain.strip.clone(),
            toolchain: self.fingerprint.clone(),
            usr: match &b.toolchain.usr {
                Some(env) => Some(
                    deps.get(env)
                        .ok_or_else(|| {
                            self.fail(ImageError::NotBuilt {
                                package: env.clone(),
                            })
                        })?
                        .output
                        .clone(),
                ),
                None => None,
            },
            epoch: SOURCE_DATE_EPOCH,
            packages,
            kernel,
            bootloader,
        })
    }

    fn fail(&self, error: ImageError) -> NodeError {
        Box::new(ImageFailure {
            error,
            board: self.board.name.clone(),
            board_file: self.board_file.clone(),
        })
    }

    /// What `kiln build` prints about a published image.
    fn summary(&self, published: &Published, m: &ImageManifest) -> Vec<String> {
        let rel = |p: &Path| {
            p.strip_prefix(&self.project_root)
                .unwrap_or(p)
                .display()
                .to_string()
        };
        let mut lines = vec![
            format!(
                "{} ({} MiB, sha256 {})",
                rel(&published.image),
                m.image.size / kiln_disk::MIB,
                m.image.sha256
            ),
            format!(
                "{} ({} bytes)",
                rel(&published.compressed),
                m.compressed.size
            ),
            rel(&published.manifest),
        ];
        for p in &m.partitions {
            lines.push(format!(
                "  p{} {:<12} {:<5} {:>5} MiB at {:>5} MiB  {}",
                p.number,
                p.label,
                p.filesystem,
                p.size / kiln_disk::MIB,
                p.start / kiln_disk::MIB,
                &p.sha256[..16]
            ));
        }
        lines
    }
}

impl Rule for ImageRule {
    fn kind(&self) -> &'static str {
        IMAGE
    }

    fn key_inputs(&self, deps: &Deps) -> Result<KeyInputs, NodeError> {
        Ok(KeyInputs::new(IMAGE_SCHEMA, &self.inputs(deps)?)?)
    }

    fn execute(&self, exec: &Exec<'_>) -> Result<Executed, NodeError> {
        let deps: Deps = exec
            .deps
            .iter()
            .map(|(n, (k, o))| {
                let d = kiln_engine::DepRef {
                    key: k.to_hex(),
                    output: o.to_hex(),
                };
                (n.clone(), d)
            })
            .collect();
        let inputs = self.inputs(&deps)?;
        kiln_image::build(
            &inputs, &exec.key, exec.store, exec.work, exec.out, exec.log,
        )
        .map_err(|e| self.fail(e))?;
        // The sparse disk stays in the work directory for `publish`.
        Ok(Executed {
            overrides: Vec::new(),
            keep_work: true,
        })
    }

    fn describe(&self) -> (&'static str, serde_json::Value) {
        let b = &self.board;
        let value = serde_json::json!({
            "board": b.name,
            "os": b.os,
            "layout": kiln_image::policy::layout(&b.partitions),
            "config_json": b.config_json,
            "packages": self.packages.iter().map(|p| &p.name).collect::<Vec<_>>(),
            "kernel": self.kernel.as_ref().map(|p| &p.name),
            "bootloader": self.bootloader.as_ref().map(|p| &p.name),
        });
        ("image", value)
    }

    fn version(&self) -> &str {
        &self.board.os.version
    }

    /// `out/<board>.img` (sparse), `.img.zst` and `.json`. A fresh build
    /// moves its sparse disk into place; a cache hit leaves an untouched
    /// image alone and expands the stored `.zst` otherwise.
    fn publish(&self, p: &Publish<'_>) -> Result<Vec<String>, NodeError> {
        let stored = p
            .store
            .materialize(&p.output)
            .map_err(|e| self.fail(ImageError::Store(e)))?;
        let manifest = kiln_image::read_manifest(&stored).map_err(|e| self.fail(e))?;
        let fresh = p.work.map(kiln_image::fresh_image);
        let published = kiln_image::publish::publish(
            &self.out_dir,
            &self.board.name,
            &p.key.to_hex(),
            &stored,
            fresh.as_deref(),
        )
        .map_err(|e| self.fail(e))?;
        Ok(self.summary(&published, &manifest))
    }
}

/// An image that could not be made, with what `kiln build` says about it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct ImageFailure {
    pub error: ImageError,
    board: String,
    board_file: String,
}

impl Failure for ImageFailure {
    fn report(&self) -> Option<String> {
        let mut msg = format!("error: image for board `{}`: {}", self.board, self.error);
        if let Some(help) = self.error.help(&self.board_file) {
            msg.push_str(&format!("\n  = help: {help}"));
        }
        msg.push_str("\n  = note: no image was written; out/ still holds the previous one, if any");
        Some(msg)
    }
}
