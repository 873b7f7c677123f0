//! The final disk image: partition images copied into place, the partition
//! table written last, plus a `.zst` copy and checksums.
//!
//! Nothing ever appears under the final names half-written: the image is
//! built as `<out>.tmp` and the compressed copy as `<out>.zst.tmp`, both
//! synced, then renamed (and the temporaries are removed on error). All
//! inputs are checked (layout, sizes, FAT types) before the first write.
//! The table goes last so that an image interrupted before the rename
//! could never be mistaken for a partitioned disk.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use kiln_atomic::{Durability, TempFile};

use crate::error::DiskError;
use crate::fat::detect_fat_bits;
use crate::finish;
use crate::ids::DiskIds;
use crate::layout::{Layout, PartitionType, Role, TableKind};
use crate::sparse::{self, CopyError};
use crate::table::write_partition_table;

/// What goes into one partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    /// All zeros (a hole in the image): root B before the first update.
    Empty,
    /// A filesystem image file, copied to the partition's start; the rest
    /// of the partition stays zero.
    Image(PathBuf),
}

/// The content of every partition of a layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contents {
    pub boot: Content,
    pub root_a: Content,
    pub root_b: Content,
    pub state: Content,
    pub data: Content,
}

impl Contents {
    /// Every partition empty.
    pub fn empty() -> Contents {
        Contents {
            boot: Content::Empty,
            root_a: Content::Empty,
            root_b: Content::Empty,
            state: Content::Empty,
            data: Content::Empty,
        }
    }

    pub fn get(&self, role: Role) -> &Content {
        match role {
            Role::Boot => &self.boot,
            Role::RootA => &self.root_a,
            Role::RootB => &self.root_b,
            Role::State => &self.state,
            Role::Data => &self.data,
        }
    }
}

/// How to write the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageOptions {
    /// The content hash the disk and partition ids are derived from (see
    /// [`DiskIds`]); e.g. a BLAKE3 over the partition images.
    pub content_hash: [u8; 32],
    /// zstd level for the `.zst` (default 3, zstd's own default: a
    /// balenaOS-sized image compresses in about a second on 2 cores).
    pub zstd_level: i32,
    /// zstd worker threads; `None` uses every available core. The `.zst`
    /// bytes do not depend on it.
    pub zstd_workers: Option<u32>,
}

impl ImageOptions {
    pub fn new(content_hash: [u8; 32]) -> ImageOptions {
        ImageOptions {
            content_hash,
            zstd_level: 3,
            zstd_workers: None,
        }
    }
}

/// One partition as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionSummary {
    pub label: &'static str,
    pub number: u32,
    pub start_bytes: u64,
    pub size_bytes: u64,
    /// Bytes of the partition image copied in (0 for [`Content::Empty`]).
    pub content_bytes: u64,
    /// SHA-256 of the whole partition range as it is in the image (content
    /// and the zeros after it).
    pub sha256: [u8; 32],
    /// What the kernel reports as `PARTUUID` (for `root=PARTUUID=...`):
    /// MBR `<signature>-<number>`, GPT the partition GUID, lower case.
    pub partuuid: String,
}

/// What [`assemble`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSummary {
    pub image: PathBuf,
    pub compressed: PathBuf,
    pub size_bytes: u64,
    /// Bytes the image occupies on the build host's disk (it is sparse).
    pub allocated_bytes: u64,
    pub compressed_bytes: u64,
    /// SHA-256 of the whole image.
    pub sha256: [u8; 32],
    pub ids: DiskIds,
    pub partitions: Vec<PartitionSummary>,
}

/// Lower-case hex, for printing checksums.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes the disk image `out` (and `out` + `.zst`) for `layout` with
/// `contents`. See the module docs for the guarantees.
pub fn assemble(
    layout: &Layout,
    contents: &Contents,
    opts: &ImageOptions,
    out: &Path,
) -> Result<DiskSummary, DiskError> {
    layout.validate()?;
    let sizes = check_inputs(layout, contents)?;
    let ids = DiskIds::derive(&opts.content_hash);

    let zst_path = suffixed(out, ".zst");
    let img_tmp = TempFile::beside(out)?;
    let zst_tmp = TempFile::beside(&zst_path)?;
    let img = img_tmp.file();
    img.set_len(layout.disk_bytes())
        .map_err(DiskError::io(img_tmp.path()))?;
    for (p, size) in layout.partitions.iter().zip(&sizes) {
        if let Content::Image(src) = contents.get(p.role) {
            copy_partition(
                p.label(),
                src,
                *size,
                img,
                p.start_bytes(),
                p.size_bytes(),
                img_tmp.path(),
            )?;
        }
    }
    write_partition_table(layout, &ids, &mut &*img)?;
    let zst = zst_tmp.file();
    let ranges: Vec<(u64, u64)> = layout
        .partitions
        .iter()
        .map(|p| (p.start_bytes(), p.start_bytes() + p.size_bytes()))
        .collect();
    let workers = opts
        .zstd_workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let sums = finish::hash_and_compress(
        img,
        layout.disk_bytes(),
        &ranges,
        zst,
        opts.zstd_level,
        workers,
    )
    .map_err(DiskError::io(zst_tmp.path()))?;
    let allocated_bytes = img
        .metadata()
        .map_err(DiskError::io(img_tmp.path()))?
        .blocks()
        * 512;

    // A stale `.zst` from an earlier run must not sit next to the new
    // image should the second rename fail.
    match fs::remove_file(&zst_path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            return Err(DiskError::io(&zst_path)(e));
        }
        _ => {}
    }
    img_tmp.persist(out, Durability::Durable)?;
    zst_tmp.persist(&zst_path, Durability::Durable)?;

    let partitions = layout
        .partitions
        .iter()
        .zip(sizes)
        .zip(sums.ranges)
        .map(|((p, content_bytes), sha256)| PartitionSummary {
            label: p.label(),
            number: p.number,
            start_bytes: p.start_bytes(),
            size_bytes: p.size_bytes(),
            content_bytes,
            sha256,
            partuuid: match layout.table {
                TableKind::Mbr => format!("{:08x}-{:02x}", ids.mbr_signature, p.number),
                TableKind::Gpt => ids.partition_guid(p.number).to_string().to_lowercase(),
            },
        })
        .collect();
    Ok(DiskSummary {
        image: out.to_path_buf(),
        compressed: zst_path,
        size_bytes: layout.disk_bytes(),
        allocated_bytes,
        compressed_bytes: sums.compressed_bytes,
        sha256: sums.image,
        ids,
        partitions,
    })
}

/// The size of each partition's image (0 when empty), after checking that
/// it fits and, for MBR FAT types, that the image's FAT width matches.
fn check_inputs(layout: &Layout, contents: &Contents) -> Result<Vec<u64>, DiskError> {
    let mut sizes = Vec::with_capacity(layout.partitions.len());
    for p in &layout.partitions {
        let Content::Image(src) = contents.get(p.role) else {
            sizes.push(0);
            continue;
        };
        let len = fs::metadata(src).map_err(DiskError::io(src))?.len();
        if len > p.size_bytes() {
            return Err(DiskError::DoesNotFit {
                label: p.label().into(),
                path: src.clone(),
                image_bytes: len,
                partition_bytes: p.size_bytes(),
                over_bytes: len - p.size_bytes(),
            });
        }
        if let PartitionType::Mbr(t) = p.ptype {
            check_fat_type(p.label(), t, src)?;
        }
        sizes.push(len);
    }
    Ok(sizes)
}

/// An MBR FAT type must match the filesystem: firmware such as the
/// Raspberry Pi's picks its FAT driver by it.
fn check_fat_type(label: &str, mbr_type: u8, src: &Path) -> Result<(), DiskError> {
    let (bits, expected) = match mbr_type {
        0x01 => (12, "FAT12"),
        0x04 | 0x06 | 0x0e => (16, "FAT16"),
        0x0b | 0x0c => (32, "FAT32"),
        _ => return Ok(()),
    };
    let mut sector = [0u8; 512];
    let n = File::open(src)
        .and_then(|mut f| sparse::read_full(&mut f, &mut sector))
        .map_err(DiskError::io(src))?;
    let found = match detect_fat_bits(&sector[..n]) {
        Some(b) if b == bits => return Ok(()),
        Some(b) => format!("FAT{b}"),
        None => "no FAT filesystem".into(),
    };
    Err(DiskError::BootTypeMismatch {
        label: label.into(),
        path: src.to_path_buf(),
        mbr_type,
        expected,
        found,
    })
}

fn copy_partition(
    label: &str,
    src: &Path,
    expected: u64,
    img: &File,
    start: u64,
    size: u64,
    img_path: &Path,
) -> Result<(), DiskError> {
    let changed = |reason: String| DiskError::Changed {
        label: label.into(),
        path: src.to_path_buf(),
        reason,
    };
    let mut f = File::open(src).map_err(DiskError::io(src))?;
    let (copied, _) =
        sparse::copy_sparse(&mut f, img, start, expected.min(size)).map_err(|e| match e {
            CopyError::Read(e) => DiskError::io(src)(e),
            CopyError::Write(e) => DiskError::io(img_path)(e),
        })?;
    if copied != expected {
        return Err(changed(format!(
            "{expected} bytes when checked, {copied} when copied"
        )));
    }
    let mut probe = [0u8; 1];
    if f.read(&mut probe).map_err(DiskError::io(src))? != 0 {
        return Err(changed(format!("grew past the {expected} bytes checked")));
    }
    Ok(())
}

/// `path` with `suffix` appended to its file name (`a.img` → `a.img.zst`).
fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}
