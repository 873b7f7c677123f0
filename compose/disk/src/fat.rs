//! The FAT boot partition (resin-boot), written with the `fatfs` crate.
//!
//! The output depends only on the tree and [`FatOptions`]: the volume ID is
//! derived from a hash of both (unless given), every entry gets the same
//! timestamp (the epoch, see [`clock`]), and entries are created in byte
//! order of their names, so fatfs allocates the same clusters and generates
//! the same short names every time.
//!
//! fatfs 0.3.6 writes the `.` and `..` entries of new directories wrongly;
//! [`dots`] repairs them on the raw volume afterwards (see there).
//!
//! FAT stores no owners, modes or xattrs: modes and owners are dropped
//! (the boot partition's mount options decide them on the device); xattrs,
//! symlinks, hard links and special files are refused with an error naming
//! the path, rather than silently lost. Names FAT cannot hold, names that
//! differ only in case, and trees that do not fit are refused before
//! anything is written.

mod cache;
mod clock;
mod dots;
mod geometry;
mod plan;

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};

use fatfs::{FileSystem, FormatVolumeOptions, FsOptions, ReadWriteSeek};
use kiln_fstree::{Data, Kind, Tree};

pub use clock::{FAT_MAX_EPOCH, FAT_MIN_EPOCH};
pub use geometry::{detect_fat_bits, FatKind};

use crate::error::FatError;
use geometry::Geometry;

/// The boot partition's label in balenaOS.
pub const BOOT_LABEL: &str = "resin-boot";

/// What to format. Start from [`FatOptions::new`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatOptions {
    /// The volume (partition) size; whole 512-byte sectors of it are used.
    pub size_bytes: u64,
    /// `None`: [`FatKind::for_size`] (FAT32 when the size allows it). The
    /// MBR type must match: see [`crate::LayoutSpec::boot_fat`].
    pub kind: Option<FatKind>,
    /// Up to 11 ASCII characters, stored as given (mkfs.fat keeps lower
    /// case too, and balenaOS mounts `/dev/disk/by-label/resin-boot`).
    pub label: String,
    /// `None` derives it from a hash of the tree (content included) and
    /// these options.
    pub volume_id: Option<u32>,
    /// Every timestamp, in seconds since 1970 (usually
    /// `SOURCE_DATE_EPOCH`), clamped to FAT's 1980..=2107 range.
    pub epoch: u64,
}

impl FatOptions {
    /// A `resin-boot` volume of `size_bytes`, type by size, derived volume
    /// ID, epoch 0 (stored as 1980-01-01).
    pub fn new(size_bytes: u64) -> FatOptions {
        FatOptions {
            size_bytes,
            kind: None,
            label: BOOT_LABEL.into(),
            volume_id: None,
            epoch: 0,
        }
    }
}

/// What was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FatSummary {
    pub kind: FatKind,
    pub volume_id: u32,
    pub cluster_bytes: u32,
    pub total_clusters: u64,
    /// Clusters the tree takes, directories included (as planned).
    pub used_clusters: u64,
    /// Free clusters as fatfs counts them after writing; always
    /// `total_clusters - used_clusters`.
    pub free_clusters: u64,
    pub files: usize,
    /// Directories below the root.
    pub dirs: usize,
}

impl FatSummary {
    /// The volume ID as `blkid` prints it (`UUID="1A2B-3C4D"`).
    pub fn volume_id_string(&self) -> String {
        format!(
            "{:04X}-{:04X}",
            self.volume_id >> 16,
            self.volume_id & 0xFFFF
        )
    }
}

/// Formats a FAT volume holding `tree` into `out` from offset 0 and
/// extends `out` to [`FatOptions::size_bytes`] (a new file stays sparse:
/// only the boot sectors, FATs, directories and file data are written).
///
/// On `Err` after formatting began, `out` holds a partial volume; write to
/// a temporary file and rename it once this returns `Ok`.
pub fn write<S: Read + Write + Seek>(
    tree: &Tree,
    opts: &FatOptions,
    out: &mut S,
) -> Result<FatSummary, FatError> {
    let label = label_bytes(&opts.label)?;
    let kind = match opts.kind {
        Some(k) => k,
        None => FatKind::for_size(opts.size_bytes)?,
    };
    let geo = Geometry::new(opts.size_bytes, kind)?;
    let plan = plan::plan(tree, &geo)?;
    let volume_id = match opts.volume_id {
        Some(id) => id,
        None => derive_volume_id(tree, opts, &geo)?,
    };

    let fail = |what: &str| {
        let what = what.to_string();
        move |source| FatError::Write { what, source }
    };
    let format = FormatVolumeOptions::new()
        .bytes_per_sector(512)
        .total_sectors(geo.total_sectors)
        .bytes_per_cluster(geo.cluster_bytes)
        .fat_type(kind.fatfs())
        .volume_id(volume_id)
        .volume_label(label);
    // The volume has its full size before anything reads it back: a read
    // past the end of a shorter file (as `dots::fix` may do on the last
    // clusters) would fail. Writing the last byte keeps a new file sparse.
    let end = out
        .seek(SeekFrom::End(0))
        .map_err(fail("the last sector"))?;
    if end < opts.size_bytes {
        out.seek(SeekFrom::Start(opts.size_bytes - 1))
            .and_then(|_| out.write_all(&[0]))
            .and_then(|_| out.seek(SeekFrom::Start(0)).map(|_| ()))
            .map_err(fail("the last sector"))?;
    }
    // Everything fatfs does goes through the cache: see cache.rs.
    let mut cached = cache::BlockCache::new(&mut *out).map_err(fail("the boot sector"))?;
    fatfs::format_volume(&mut cached, format).map_err(fail("the empty filesystem"))?;
    cached
        .seek(SeekFrom::Start(0))
        .map_err(fail("the boot sector"))?;

    let fs_opts = FsOptions::new()
        .update_accessed_date(false)
        .time_provider(clock::clock_for(opts.epoch));
    let fs = FileSystem::new(&mut cached, fs_opts).map_err(fail("the mounted filesystem"))?;
    let stats = fs.stats().map_err(fail("the FAT"))?;
    let got_kind = match fs.fat_type() {
        fatfs::FatType::Fat12 => "FAT12",
        fatfs::FatType::Fat16 => "FAT16",
        fatfs::FatType::Fat32 => "FAT32",
    };
    if got_kind != kind.name() || u64::from(stats.total_clusters()) != geo.clusters {
        return Err(FatError::Geometry {
            want_kind: kind.name(),
            want_clusters: geo.clusters,
            got_kind,
            got_clusters: u64::from(stats.total_clusters()),
        });
    }
    add_dir(&fs.root_dir(), tree, "/")?;
    let stats = fs.stats().map_err(fail("the FAT"))?;
    fs.unmount().map_err(fail("the FSInfo sector"))?;
    dots::fix(&mut cached).map_err(fail("the directories' dot entries"))?;
    cached.flush_blocks().map_err(fail("the volume"))?;
    Ok(FatSummary {
        kind,
        volume_id,
        cluster_bytes: geo.cluster_bytes,
        total_clusters: geo.clusters,
        used_clusters: plan.clusters,
        free_clusters: u64::from(stats.free_clusters()),
        files: plan.files,
        dirs: plan.dirs,
    })
}

/// Creates `dir`'s children in name order, then checks that each became
/// its own entry: fatfs's `create_*` silently opens an existing entry whose
/// long *or short* name matches, which the plan's case check cannot fully
/// rule out (a literal name like `LONGNA~1.TXT`).
fn add_dir<IO: ReadWriteSeek>(
    dir: &fatfs::Dir<'_, IO>,
    tree: &Tree,
    path: &str,
) -> Result<(), FatError> {
    let children = tree.children(path);
    for (child, node) in &children {
        let name = kiln_fstree::name(child);
        let fail = |source| FatError::Write {
            what: (*child).to_string(),
            source,
        };
        match &node.kind {
            Kind::Dir => {
                let sub = dir.create_dir(name).map_err(fail)?;
                add_dir(&sub, tree, child)?;
            }
            Kind::File(data) => {
                let mut file = dir.create_file(name).map_err(fail)?;
                copy_data(child, data, &mut file)?;
                // fatfs updates the entry's size on flush; its Drop would
                // only log a failure.
                file.flush().map_err(fail)?;
            }
            other => {
                return Err(FatError::Unsupported {
                    path: (*child).to_string(),
                    kind: match other {
                        Kind::Symlink(_) => "symlink",
                        Kind::Hardlink(_) => "hard link",
                        _ => "special file",
                    },
                })
            }
        }
    }
    let mut found = 0;
    for entry in dir.iter() {
        let entry = entry.map_err(|source| FatError::Write {
            what: path.to_string(),
            source,
        })?;
        let n = entry.file_name();
        if n != "." && n != ".." {
            found += 1;
        }
    }
    if found != children.len() {
        return Err(FatError::Merged {
            dir: path.into(),
            expected: children.len(),
            found,
        });
    }
    Ok(())
}

fn copy_data<W: Write>(path: &str, data: &Data, out: &mut W) -> Result<(), FatError> {
    let fail = |source| FatError::Write {
        what: path.to_string(),
        source,
    };
    match data {
        Data::Bytes(b) => out.write_all(b).map_err(fail),
        Data::Path(host) => {
            let expected = plan::data_len(path, data)?;
            let read_err = |source| FatError::Read {
                path: host.clone(),
                source,
            };
            let f = File::open(host).map_err(read_err)?;
            // Read one byte more than planned, to notice a file that grew.
            let mut src = f.take(expected + 1);
            let mut buf = vec![0u8; 1 << 16];
            let mut copied = 0u64;
            loop {
                let n = match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(read_err(e)),
                };
                copied += n as u64;
                if copied > expected {
                    break;
                }
                out.write_all(&buf[..n]).map_err(fail)?;
            }
            if copied != expected {
                return Err(FatError::Changed {
                    path: path.into(),
                    expected,
                    actual: copied,
                });
            }
            Ok(())
        }
    }
}

/// The label as the 11 space-padded bytes FAT stores.
fn label_bytes(label: &str) -> Result<[u8; 11], FatError> {
    let bad = |reason: &str| FatError::BadLabel {
        label: label.into(),
        reason: reason.into(),
    };
    if label.is_empty() || label.len() > 11 {
        return Err(bad("1 to 11 characters"));
    }
    if label.starts_with(' ') {
        return Err(bad("must not start with a space"));
    }
    if let Some(c) = label
        .chars()
        .find(|&c| !c.is_ascii_graphic() && c != ' ' || "\"*+,./:;<=>?[\\]|".contains(c))
    {
        return Err(FatError::BadLabel {
            label: label.into(),
            reason: format!("{c:?} is not allowed (printable ASCII except \"*+,./:;<=>?[\\]|)"),
        });
    }
    let mut out = [b' '; 11];
    out[..label.len()].copy_from_slice(label.as_bytes());
    Ok(out)
}

/// A volume ID that changes with the content and options, so two
/// different boot partitions are told apart by `blkid` while one tree
/// always gives the same ID.
fn derive_volume_id(tree: &Tree, opts: &FatOptions, geo: &Geometry) -> Result<u32, FatError> {
    let mut h = blake3::Hasher::new_derive_key("kiln-disk 2025-01 FAT volume ID");
    h.update(geo.kind.name().as_bytes());
    h.update(&opts.size_bytes.to_le_bytes());
    h.update(&opts.epoch.to_le_bytes());
    h.update(opts.label.as_bytes());
    h.update(&[0]);
    for (path, node) in tree.iter() {
        h.update(path.as_bytes());
        h.update(&[0]);
        match &node.kind {
            Kind::Dir => {
                h.update(b"d");
            }
            Kind::File(data) => {
                h.update(b"f");
                h.update(&plan::data_len(path, data)?.to_le_bytes());
                match data {
                    Data::Bytes(b) => {
                        h.update(b);
                    }
                    Data::Path(p) => {
                        let read_err = |source| FatError::Read {
                            path: p.clone(),
                            source,
                        };
                        let mut f = File::open(p).map_err(read_err)?;
                        io::copy(&mut f, &mut h).map_err(read_err)?;
                    }
                }
            }
            // Refused by the plan already.
            _ => {}
        }
    }
    let out = h.finalize();
    let b = out.as_bytes();
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_fstree::Node;
    use std::io::Cursor;

    fn tree() -> Tree {
        let mut t = Tree::new();
        t.mkdir_p("/overlays").unwrap();
        t.insert(
            "/config.json",
            Node::file(Data::Bytes(br#"{"hostname":"x"}"#.to_vec()), 0o644),
        )
        .unwrap();
        t.insert(
            "/overlays/a-rather-long-file-name.dtbo",
            Node::file(Data::Bytes(vec![7; 3000]), 0o644),
        )
        .unwrap();
        t
    }

    fn format(t: &Tree, opts: &FatOptions) -> (Vec<u8>, FatSummary) {
        let mut c = Cursor::new(Vec::new());
        let s = write(t, opts, &mut c).unwrap();
        (c.into_inner(), s)
    }

    #[test]
    fn reproducible_and_content_dependent() {
        let opts = FatOptions::new(40 << 20);
        let (a, sa) = format(&tree(), &opts);
        let (b, sb) = format(&tree(), &opts);
        assert_eq!(a.len(), 40 << 20);
        assert!(a == b);
        assert_eq!(sa, sb);
        assert_eq!(sa.kind, FatKind::Fat32);
        // The plan's space accounting is exactly what fatfs allocated.
        assert_eq!(sa.used_clusters + sa.free_clusters, sa.total_clusters);
        let mut t = tree();
        t.insert("/x", Node::file(Data::Bytes(vec![1]), 0o644))
            .unwrap();
        let (_, sc) = format(&t, &opts);
        assert_ne!(sa.volume_id, sc.volume_id);
        assert_eq!(detect_fat_bits(&a[..512]), Some(32));
    }

    #[test]
    fn fatfs_agrees_with_the_planned_geometry() {
        // Around the FAT32 threshold and the cluster-size steps.
        for mib in [4u64, 8, 32, 33, 34, 36, 40, 100, 260, 264] {
            let opts = FatOptions::new(mib << 20);
            let (img, s) = format(&tree(), &opts);
            assert_eq!(
                s.used_clusters + s.free_clusters,
                s.total_clusters,
                "{mib} MiB"
            );
            let bits = match s.kind {
                FatKind::Fat16 => 16,
                FatKind::Fat32 => 32,
            };
            assert_eq!(detect_fat_bits(&img[..512]), Some(bits), "{mib} MiB");
        }
    }

    #[test]
    fn refuses_what_fat_cannot_hold() {
        let mut t = tree();
        t.insert("/link", Node::symlink("config.json")).unwrap();
        let e = write(&t, &FatOptions::new(40 << 20), &mut Cursor::new(Vec::new())).unwrap_err();
        assert!(
            matches!(e, FatError::Unsupported { ref path, kind: "symlink" } if path == "/link"),
            "{e}"
        );

        let mut t = tree();
        t.insert("/CONFIG.JSON", Node::file(Data::Bytes(vec![]), 0o644))
            .unwrap();
        let e = write(&t, &FatOptions::new(40 << 20), &mut Cursor::new(Vec::new())).unwrap_err();
        assert!(matches!(e, FatError::NameClash { .. }), "{e}");

        let mut t = Tree::new();
        t.insert("/big", Node::file(Data::Bytes(vec![1; 5 << 20]), 0o644))
            .unwrap();
        let e = write(&t, &FatOptions::new(4 << 20), &mut Cursor::new(Vec::new())).unwrap_err();
        assert!(matches!(e, FatError::NoSpace { .. }), "{e}");
        assert!(e.to_string().contains("4194304-byte FAT16"), "{e}");

        let mut o = FatOptions::new(40 << 20);
        o.label = "resin/boot".into();
        assert!(matches!(
            write(&tree(), &o, &mut Cursor::new(Vec::new())),
            Err(FatError::BadLabel { .. })
        ));
    }

    #[test]
    fn a_literal_short_name_alias_is_caught() {
        // fatfs gives "a-rather-long-file-name.dtbo" the short name
        // A-RATH~1.DTB; creating that name afterwards would open the
        // first file instead of making a second.
        let mut t = tree();
        t.insert(
            "/overlays/a-rath~1.dtb",
            Node::file(Data::Bytes(vec![2]), 0o644),
        )
        .unwrap();
        let r = write(&t, &FatOptions::new(40 << 20), &mut Cursor::new(Vec::new()));
        assert!(matches!(r, Err(FatError::Merged { .. })), "{r:?}");
    }
}
