//! Where each partition goes.
//!
//! [`LayoutSpec`] is the plain description (table kind, gap, alignment,
//! partition sizes); [`LayoutSpec::compute`] turns it into a [`Layout`] of
//! sector ranges, following balenaOS (see `image_types_balena.bbclass` in
//! meta-balena):
//!
//! - **MBR**: p1 resin-boot (FAT, bootable), p2 resin-rootA, p3
//!   resin-rootB, p4 an extended partition from the end of p3 to the end of
//!   the disk, holding p5 resin-state and p6 resin-data as logical
//!   partitions. Each logical partition is preceded by its EBR, one sector
//!   that sits alone in a whole alignment unit, so that every partition
//!   still starts and ends on the alignment boundary (the first EBR is the
//!   extended partition's first sector).
//! - **GPT**: p1..p5 boot, rootA, rootB, state, data back to back, named
//!   like the filesystem labels.
//!
//! Sizes are rounded **up** to the alignment (default 4 MiB), as balena's
//! image class does, so a caller can pass the size its filesystem needs.
//! The gap before p1 is rounded up too. The only size that is checked
//! rather than rounded is a caller-given disk size, which must hold every
//! partition (and, for GPT, the backup table).
//!
//! A [`Layout`] has public fields so that board code can adjust it;
//! [`Layout::validate`] (run by `compute` and again before anything is
//! written) rejects overlaps, partitions outside the disk, misalignment,
//! and MBR entries beyond 32-bit sector numbers.

use serde::Serialize;

use crate::error::LayoutError;
use crate::fat::FatKind;
use crate::guid::Guid;

/// Bytes per sector. Kiln writes 512-byte-sector images only (SD cards,
/// eMMC, USB sticks and virtual disks); 4Kn disks would need another table.
pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;

/// Sectors taken by GPT's own structures at either end of the disk: the
/// header plus 128 entries of 128 bytes (32 sectors). The protective MBR
/// adds one more at the start.
const GPT_TABLE_SECTORS: u64 = 1 + 32;
/// The largest sector number or count an MBR entry can hold.
const MBR_MAX: u64 = u32::MAX as u64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
}

impl TableKind {
    /// `mbr` or `gpt`, as boards and manifests write it.
    pub fn name(self) -> &'static str {
        match self {
            TableKind::Mbr => "mbr",
            TableKind::Gpt => "gpt",
        }
    }
}

/// What a partition is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Boot,
    RootA,
    RootB,
    State,
    Data,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Boot,
        Role::RootA,
        Role::RootB,
        Role::State,
        Role::Data,
    ];

    /// The filesystem label, which is also the GPT partition name; balenaOS
    /// mounts partitions by these (`/dev/disk/by-label/resin-boot`).
    pub fn label(self) -> &'static str {
        match self {
            Role::Boot => "resin-boot",
            Role::RootA => "resin-rootA",
            Role::RootB => "resin-rootB",
            Role::State => "resin-state",
            Role::Data => "resin-data",
        }
    }
}

/// A partition's type as its table records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionType {
    /// MBR system id: 0x0c FAT32 (LBA), 0x0e FAT16 (LBA), 0x83 Linux.
    Mbr(u8),
    Gpt(Guid),
}

pub const MBR_FAT32_LBA: u8 = 0x0c;
pub const MBR_FAT16_LBA: u8 = 0x0e;
pub const MBR_LINUX: u8 = 0x83;
pub const MBR_EXTENDED_LBA: u8 = 0x0f;

/// GPT type of the boot partition: the EFI System Partition type.
///
/// Chosen over "Microsoft basic data" because UEFI firmware is only
/// required to look for `\EFI\BOOT\BOOT*.EFI` on ESPs (generic x86 and
/// arm64 boards boot that way), and because it is what balenaOS's own GPT
/// images get: its image class runs `parted set <n> boot on`, which on GPT
/// means "make this an ESP". U-Boot boards are covered by the legacy-BIOS-
/// bootable attribute the GPT writer sets on bootable partitions, which
/// U-Boot's `part list -bootable` (distro boot) looks for.
pub const GPT_BOOT_TYPE: Guid = Guid::EFI_SYSTEM;

/// One partition, in 512-byte sectors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    pub role: Role,
    /// The partition number as the kernel names it (`sda5`): MBR 1, 2, 3, 5,
    /// 6 (4 is the extended partition); GPT 1..5.
    pub number: u32,
    pub start: u64,
    pub sectors: u64,
    pub ptype: PartitionType,
    /// MBR: the active flag. GPT: attribute bit 2, "legacy BIOS bootable".
    pub bootable: bool,
    /// MBR logical partitions only: the sector of the EBR that describes
    /// this partition (inside the extended partition, before `start`).
    pub ebr: Option<u64>,
}

impl Partition {
    pub fn label(&self) -> &'static str {
        self.role.label()
    }

    /// One past the last sector.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.sectors)
    }

    pub fn start_bytes(&self) -> u64 {
        self.start.saturating_mul(SECTOR)
    }

    pub fn size_bytes(&self) -> u64 {
        self.sectors.saturating_mul(SECTOR)
    }
}

/// The MBR extended partition (p4, type 0x0f).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extended {
    pub start: u64,
    pub sectors: u64,
}

impl Extended {
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.sectors)
    }
}

/// A computed partition layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub table: TableKind,
    /// Alignment in sectors.
    pub alignment: u64,
    /// Disk (image) size in sectors.
    pub disk_sectors: u64,
    /// In partition-number order.
    pub partitions: Vec<Partition>,
    /// MBR only.
    pub extended: Option<Extended>,
}

/// The plain description a layout is computed from. All sizes in bytes.
/// Serializes (field order fixed) as part of the image key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LayoutSpec {
    pub table: TableKind,
    /// Space before p1, for a raw bootloader (GRUB core.img, U-Boot SPL).
    pub gap_bytes: u64,
    /// Every partition starts and ends on a multiple of this.
    pub alignment_bytes: u64,
    pub boot_bytes: u64,
    /// Root A; root B is always the same size, so that an OS update always
    /// fits the empty root partition.
    pub root_bytes: u64,
    pub state_bytes: u64,
    pub data_bytes: u64,
    /// The disk size; `None` makes the image as small as the partitions
    /// allow (MBR: the end of data; GPT: one more alignment unit, which
    /// holds the backup table). A larger disk leaves the extra space free
    /// after data (MBR: inside the extended partition, which always spans
    /// to the last alignment boundary of the disk).
    pub disk_bytes: Option<u64>,
    /// The boot filesystem, which picks the MBR type (0x0c or 0x0e). `None`
    /// means what [`crate::fat::write`] chooses for the boot size by
    /// default ([`FatKind::for_size`]).
    pub boot_fat: Option<FatKind>,
}

impl LayoutSpec {
    pub fn compute(&self) -> Result<Layout, LayoutError> {
        if self.alignment_bytes == 0 || self.alignment_bytes % SECTOR != 0 {
            return Err(LayoutError::BadAlignment {
                alignment_bytes: self.alignment_bytes,
            });
        }
        let align = self.alignment_bytes / SECTOR;
        let sectors = |role: Role, bytes: u64| -> Result<u64, LayoutError> {
            if bytes == 0 {
                return Err(LayoutError::ZeroSize {
                    label: role.label().into(),
                });
            }
            round_up(bytes.div_ceil(SECTOR), align)
        };
        let boot = sectors(Role::Boot, self.boot_bytes)?;
        let root = sectors(Role::RootA, self.root_bytes)?;
        let state = sectors(Role::State, self.state_bytes)?;
        let data = sectors(Role::Data, self.data_bytes)?;
        let gap = round_up(self.gap_bytes.div_ceil(SECTOR), align)?;
        let boot_kind = match self.boot_fat {
            Some(k) => k,
            None => FatKind::for_size(boot.saturating_mul(SECTOR)).map_err(|e| {
                LayoutError::BadEntry {
                    label: Role::Boot.label().into(),
                    reason: e.to_string(),
                }
            })?,
        };

        let mut cursor = gap;
        let mut take = |n: u64, skip: u64| -> Result<u64, LayoutError> {
            let start = add(cursor, skip)?;
            cursor = add(start, n)?;
            Ok(start)
        };
        let mut parts = Vec::with_capacity(5);
        let mut part = |role, number, start, sectors, ptype, bootable, ebr| {
            parts.push(Partition {
                role,
                number,
                start,
                sectors,
                ptype,
                bootable,
                ebr,
            })
        };
        let (boot_type, linux) = match (self.table, boot_kind) {
            (TableKind::Mbr, kind) => (
                PartitionType::Mbr(match kind {
                    FatKind::Fat16 => MBR_FAT16_LBA,
                    FatKind::Fat32 => MBR_FAT32_LBA,
                }),
                PartitionType::Mbr(MBR_LINUX),
            ),
            (TableKind::Gpt, _) => (
                PartitionType::Gpt(GPT_BOOT_TYPE),
                PartitionType::Gpt(Guid::LINUX_FS),
            ),
        };
        // Both tables start alike: boot, then the two roots.
        let s = take(boot, 0)?;
        part(Role::Boot, 1, s, boot, boot_type, true, None);
        let s = take(root, 0)?;
        part(Role::RootA, 2, s, root, linux, false, None);
        let s = take(root, 0)?;
        part(Role::RootB, 3, s, root, linux, false, None);
        let roots_end = s + root;
        let layout = match self.table {
            TableKind::Mbr => {
                // Each logical partition starts one alignment unit after
                // its EBR, which is that unit's first sector.
                let s = take(state, align)?;
                part(Role::State, 5, s, state, linux, false, Some(s - align));
                let s = take(data, align)?;
                part(Role::Data, 6, s, data, linux, false, Some(s - align));
                let end = s + data;
                let disk_sectors = self.disk_sectors(end)?;
                // Extended to the last alignment boundary, so it too
                // starts and ends aligned, and data can later grow to the
                // end of a larger device after resizing p4.
                let ext_end = disk_sectors / align * align;
                Layout {
                    table: TableKind::Mbr,
                    alignment: align,
                    disk_sectors,
                    partitions: parts,
                    extended: Some(Extended {
                        start: roots_end,
                        sectors: ext_end.saturating_sub(roots_end),
                    }),
                }
            }
            TableKind::Gpt => {
                let s = take(state, 0)?;
                part(Role::State, 4, s, state, linux, false, None);
                let s = take(data, 0)?;
                part(Role::Data, 5, s, data, linux, false, None);
                let end = s + data;
                let disk_sectors = match self.disk_bytes {
                    None => add(end, align)?,
                    Some(_) => self.disk_sectors(add(end, GPT_TABLE_SECTORS)?)?,
                };
                Layout {
                    table: TableKind::Gpt,
                    alignment: align,
                    disk_sectors,
                    partitions: parts,
                    extended: None,
                }
            }
        };
        layout.validate()?;
        Ok(layout)
    }

    /// The caller's disk size in sectors, or `needed` if none was given.
    fn disk_sectors(&self, needed: u64) -> Result<u64, LayoutError> {
        match self.disk_bytes {
            None => Ok(needed),
            Some(bytes) if bytes / SECTOR < needed => Err(LayoutError::DiskTooSmall {
                needed_bytes: needed * SECTOR,
                needed_mib: (needed * SECTOR).div_ceil(MIB),
                disk_bytes: bytes,
            }),
            Some(bytes) => Ok(bytes / SECTOR),
        }
    }
}

fn add(a: u64, b: u64) -> Result<u64, LayoutError> {
    a.checked_add(b).ok_or(LayoutError::Overflow {
        what: "partition offsets",
    })
}

fn round_up(n: u64, align: u64) -> Result<u64, LayoutError> {
    n.div_ceil(align)
        .checked_mul(align)
        .ok_or(LayoutError::Overflow {
            what: "a partition size",
        })
}

/// A named sector range, for the overlap check.
struct Region {
    name: String,
    start: u64,
    end: u64,
}

impl Layout {
    pub fn get(&self, role: Role) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    pub fn disk_bytes(&self) -> u64 {
        self.disk_sectors.saturating_mul(SECTOR)
    }

    /// Checks that the table can be written and every partition is where a
    /// reader will look for it. See the module docs.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let align = self.alignment;
        if align == 0 {
            return Err(LayoutError::BadAlignment { alignment_bytes: 0 });
        }
        let disk = self.disk_sectors;
        // Partitions first, so errors name the partition before the
        // table structure it runs into.
        let mut regions = Vec::new();
        let mut numbers = Vec::new();
        for p in &self.partitions {
            let label = p.label();
            let bad = |reason: String| LayoutError::BadEntry {
                label: label.into(),
                reason,
            };
            if p.sectors == 0 {
                return Err(LayoutError::ZeroSize {
                    label: label.into(),
                });
            }
            if p.start % align != 0 || p.end() % align != 0 {
                return Err(LayoutError::Misaligned {
                    label: label.into(),
                    start: p.start,
                    end: p.end(),
                    alignment: align,
                    alignment_bytes: align.saturating_mul(SECTOR),
                });
            }
            if p.end() > disk || p.start.checked_add(p.sectors).is_none() {
                return Err(LayoutError::OutsideDisk {
                    label: label.into(),
                    start: p.start,
                    end: p.end(),
                    disk_sectors: disk,
                    disk_bytes: disk.saturating_mul(SECTOR),
                });
            }
            if numbers.contains(&p.number) {
                return Err(bad(format!("partition number {} is used twice", p.number)));
            }
            numbers.push(p.number);
            match (self.table, p.ptype) {
                (TableKind::Mbr, PartitionType::Mbr(t)) => {
                    if t == 0 || matches!(t, 0x05 | 0x0f | 0x85) {
                        return Err(bad(format!("MBR type {t:#04x} is not a data partition")));
                    }
                }
                (TableKind::Gpt, PartitionType::Gpt(_)) => {}
                _ => return Err(bad("partition type does not match the table kind".into())),
            }
            regions.push(Region {
                name: label.into(),
                start: p.start,
                end: p.end(),
            });
        }
        let tables = match self.table {
            TableKind::Mbr => vec![Region {
                name: "the MBR".into(),
                start: 0,
                end: 1,
            }],
            TableKind::Gpt => vec![
                Region {
                    name: "the primary GPT".into(),
                    start: 0,
                    end: 1 + GPT_TABLE_SECTORS,
                },
                Region {
                    name: "the backup GPT".into(),
                    start: disk.saturating_sub(GPT_TABLE_SECTORS),
                    end: disk,
                },
            ],
        };
        regions.extend(tables);
        match self.table {
            TableKind::Gpt => {
                for p in &self.partitions {
                    if !(1..=128).contains(&p.number) || p.ebr.is_some() {
                        return Err(LayoutError::BadEntry {
                            label: p.label().into(),
                            reason: format!(
                                "GPT partitions are numbered 1..=128 and have no EBR (number {}, EBR {:?})",
                                p.number, p.ebr
                            ),
                        });
                    }
                }
                if self.extended.is_some() {
                    return Err(LayoutError::BadEntry {
                        label: "extended".into(),
                        reason: "GPT has no extended partition".into(),
                    });
                }
            }
            TableKind::Mbr => self.validate_mbr(&mut regions)?,
        }
        for (i, a) in regions.iter().enumerate() {
            for b in &regions[i + 1..] {
                if a.start < b.end && b.start < a.end {
                    return Err(LayoutError::Overlap {
                        a: a.name.clone(),
                        a_start: a.start,
                        a_end: a.end,
                        b: b.name.clone(),
                        b_start: b.start,
                        b_end: b.end,
                    });
                }
            }
        }
        Ok(())
    }

    /// MBR rules: primaries are 1..=3, 4 is the extended partition (when
    /// there are logical partitions), logical partitions are 5.. in disk
    /// order, each with its EBR inside the extended partition; every number
    /// fits 32 bits. Adds the EBRs to `regions` and checks the extended
    /// partition against the primaries.
    fn validate_mbr(&self, regions: &mut Vec<Region>) -> Result<(), LayoutError> {
        let logical: Vec<&Partition> = self.partitions.iter().filter(|p| p.number >= 5).collect();
        let mut entries: Vec<(String, u64, u64)> = self
            .partitions
            .iter()
            .map(|p| (p.label().to_string(), p.start, p.end()))
            .collect();
        for p in &self.partitions {
            let bad = |reason: String| LayoutError::BadEntry {
                label: p.label().into(),
                reason,
            };
            match p.number {
                1..=3 if p.ebr.is_some() => {
                    return Err(bad("a primary partition has no EBR".into()))
                }
                1..=3 => {}
                4 => {
                    return Err(bad(
                        "number 4 is the extended partition in Kiln's MBR layouts".into(),
                    ))
                }
                _ => {}
            }
        }
        if let Some(ext) = &self.extended {
            if ext.sectors == 0 {
                return Err(LayoutError::ZeroSize {
                    label: "extended".into(),
                });
            }
            if ext.end() > self.disk_sectors {
                return Err(LayoutError::OutsideDisk {
                    label: "extended".into(),
                    start: ext.start,
                    end: ext.end(),
                    disk_sectors: self.disk_sectors,
                    disk_bytes: self.disk_sectors.saturating_mul(SECTOR),
                });
            }
            entries.push(("extended".into(), ext.start, ext.end()));
            for p in self.partitions.iter().filter(|p| p.number < 5) {
                if p.start < ext.end() && ext.start < p.end() {
                    return Err(LayoutError::Overlap {
                        a: p.label().into(),
                        a_start: p.start,
                        a_end: p.end(),
                        b: "extended".into(),
                        b_start: ext.start,
                        b_end: ext.end(),
                    });
                }
            }
        } else if !logical.is_empty() {
            return Err(LayoutError::BadEntry {
                label: logical[0].label().into(),
                reason: "a logical partition needs an extended partition".into(),
            });
        }
        let mut prev_start = 0;
        for (i, p) in logical.iter().enumerate() {
            let ext = self.extended.as_ref();
            let (ext_start, ext_end) = ext.map_or((0, 0), |e| (e.start, e.end()));
            let expected_number = 5 + i as u32;
            let Some(ebr) = p.ebr else {
                return Err(LayoutError::BadEntry {
                    label: p.label().into(),
                    reason: "a logical partition needs the sector of its EBR".into(),
                });
            };
            if p.number != expected_number || (i > 0 && p.start <= prev_start) {
                return Err(LayoutError::BadEntry {
                    label: p.label().into(),
                    reason: format!(
                        "logical partitions are numbered from 5 in disk order; expected {expected_number}, got {}",
                        p.number
                    ),
                });
            }
            prev_start = p.start;
            let first_ebr_misplaced = i == 0 && ebr != ext_start;
            if ebr < ext_start || ebr >= p.start || p.end() > ext_end || first_ebr_misplaced {
                return Err(LayoutError::OutsideExtended {
                    label: p.label().into(),
                    start: p.start,
                    end: p.end(),
                    ebr,
                    ext_start,
                    ext_end,
                });
            }
            regions.push(Region {
                name: format!("the EBR of {}", p.label()),
                start: ebr,
                end: ebr + 1,
            });
        }
        for (label, start, end) in entries {
            // Relative EBR offsets are smaller than these, so checking the
            // absolute numbers covers them.
            if start > MBR_MAX || end - start > MBR_MAX {
                return Err(LayoutError::MbrLimit {
                    label,
                    start,
                    end,
                    max: MBR_MAX,
                });
            }
        }
        Ok(())
    }
}
