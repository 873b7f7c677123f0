//! Partition tables checked with `sfdisk -d` (util-linux), an independent
//! reader: exact starts, sizes, types, flags and ids.

mod common;

use common::{balena_spec, entry, sfdisk, sparse_file};
use kiln_disk::{
    write_partition_table, DiskError, DiskIds, FatKind, Guid, LayoutError, LayoutSpec, Role,
    TableKind, MIB,
};

fn table_only(spec: &LayoutSpec, hash: u8) -> (tempfile::TempDir, std::path::PathBuf, DiskIds) {
    let layout = spec.compute().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let f = sparse_file(&path, layout.disk_bytes());
    let ids = DiskIds::derive(&[hash; 32]);
    write_partition_table(&layout, &ids, &mut &f).unwrap();
    (dir, path, ids)
}

#[test]
fn mbr_with_balena_defaults() {
    let spec = balena_spec(TableKind::Mbr);
    let (_dir, path, ids) = table_only(&spec, 1);
    let (header, parts) = sfdisk(&path);
    assert_eq!(header["label"], "dos");
    assert_eq!(header["label-id"], format!("0x{:08x}", ids.mbr_signature));
    assert_eq!(header["sector-size"], "512");
    // 4 MiB gap; boot 40, roots 320, state 20, data 192 MiB; an EBR in its
    // own 4 MiB before each logical partition; extended to the disk end.
    let expected = [
        (1, entry(8192, 81920, "c", true)),
        (2, entry(90112, 655360, "83", false)),
        (3, entry(745472, 655360, "83", false)),
        (4, entry(1400832, 450560, "f", false)),
        (5, entry(1409024, 40960, "83", false)),
        (6, entry(1458176, 393216, "83", false)),
    ];
    assert_eq!(parts, expected.into_iter().collect());
    for e in parts.values() {
        assert_eq!(e.start % 8192, 0);
        assert_eq!((e.start + e.size) % 8192, 0);
    }
    // 904 MiB: the end of data.
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        1458176 * 512 + 192 * MIB
    );

    // A second, independent reader of the EBR chain.
    let mbr = mbrman::MBR::read_from(&mut std::fs::File::open(&path).unwrap(), 512).unwrap();
    let logical: Vec<(u32, u32, u32)> = mbr
        .logical_partitions
        .iter()
        .map(|l| {
            (
                l.absolute_ebr_lba,
                l.partition.starting_lba,
                l.partition.sectors,
            )
        })
        .collect();
    assert_eq!(
        logical,
        vec![(1400832, 1409024, 40960), (1449984, 1458176, 393216)]
    );
}

#[test]
fn mbr_small_boot_is_fat16() {
    let mut spec = balena_spec(TableKind::Mbr);
    spec.boot_bytes = 32 * MIB;
    let (_dir, path, _) = table_only(&spec, 1);
    let (_, parts) = sfdisk(&path);
    assert_eq!(parts[&1], entry(8192, 65536, "e", true));
    spec.boot_fat = Some(FatKind::Fat32);
    let (_dir, path, _) = table_only(&spec, 1);
    assert_eq!(sfdisk(&path).1[&1].ptype, "c");
}

#[test]
fn mbr_logical_partitions_beyond_4_gib() {
    // With 2 GiB roots the extended partition and both EBRs lie past
    // 4 GiB, where mbrman's own EBR writer overflows a u32.
    let mut spec = balena_spec(TableKind::Mbr);
    spec.root_bytes = 2048 * MIB;
    let (_dir, path, _) = table_only(&spec, 2);
    let (_, parts) = sfdisk(&path);
    let ext = (4 + 40 + 2 * 2048) * 2048;
    assert_eq!(parts[&4].start, ext);
    assert_eq!(parts[&5], entry(ext + 8192, 40960, "83", false));
    assert_eq!(
        parts[&6],
        entry(ext + 8192 + 40960 + 8192, 393216, "83", false)
    );
    assert!(ext * 512 > 4 << 30);
}

#[test]
fn mbr_disk_size_given() {
    let mut spec = balena_spec(TableKind::Mbr);
    // Not a multiple of 4 MiB: the extended partition stops at the last
    // boundary, data keeps its size.
    spec.disk_bytes = Some(1000 * MIB + 12345);
    let (_dir, path, _) = table_only(&spec, 3);
    let (_, parts) = sfdisk(&path);
    assert_eq!(parts[&4], entry(1400832, 1000 * 2048 - 1400832, "f", false));
    assert_eq!(parts[&6].size, 393216);

    spec.disk_bytes = Some(900 * MIB);
    let e = spec.compute().unwrap_err();
    assert!(
        matches!(e, LayoutError::DiskTooSmall { needed_bytes, disk_bytes, .. }
            if needed_bytes == 904 * MIB && disk_bytes == 900 * MIB),
        "{e}"
    );
    assert!(e.to_string().contains("947912704 bytes (904 MiB)"), "{e}");
}

#[test]
fn gpt_with_balena_defaults() {
    let spec = balena_spec(TableKind::Gpt);
    let (_dir, path, ids) = table_only(&spec, 4);
    let (header, parts) = sfdisk(&path);
    let disk = std::fs::metadata(&path).unwrap().len() / 512;
    // Boot, roots, state, data back to back from 4 MiB, plus 4 MiB at the
    // end for the backup table.
    assert_eq!(disk, (4 + 40 + 320 + 320 + 20 + 192 + 4) * 2048);
    assert_eq!(header["label"], "gpt");
    assert_eq!(header["label-id"], ids.disk_guid.to_string());
    assert_eq!(header["first-lba"], "34");
    assert_eq!(header["last-lba"], (disk - 34).to_string());
    let linux = Guid::LINUX_FS.to_string();
    let expected = [
        (
            8192u64,
            81920u64,
            Guid::EFI_SYSTEM.to_string(),
            "resin-boot",
        ),
        (90112, 655360, linux.clone(), "resin-rootA"),
        (745472, 655360, linux.clone(), "resin-rootB"),
        (1400832, 40960, linux.clone(), "resin-state"),
        (1441792, 393216, linux, "resin-data"),
    ];
    assert_eq!(parts.len(), 5);
    for (i, (start, size, ptype, name)) in expected.into_iter().enumerate() {
        let n = i as u32 + 1;
        let e = &parts[&n];
        assert_eq!((e.start, e.size, &e.ptype), (start, size, &ptype), "p{n}");
        assert_eq!(e.name.as_deref(), Some(name));
        assert_eq!(e.uuid, Some(ids.partition_guid(n).to_string()));
        let attrs = if n == 1 {
            Some("LegacyBIOSBootable")
        } else {
            None
        };
        assert_eq!(e.attrs.as_deref(), attrs, "p{n}");
    }
}

#[test]
fn ids_follow_the_content_hash() {
    let spec = balena_spec(TableKind::Gpt);
    let (_d1, a, _) = table_only(&spec, 5);
    let (_d2, b, _) = table_only(&spec, 5);
    let (_d3, c, _) = table_only(&spec, 6);
    let (ha, pa) = sfdisk(&a);
    let (hb, pb) = sfdisk(&b);
    let (hc, pc) = sfdisk(&c);
    assert_eq!((&ha["label-id"], &pa), (&hb["label-id"], &pb));
    assert_ne!(ha["label-id"], hc["label-id"]);
    assert_ne!(pa[&2].uuid, pc[&2].uuid);
}

#[test]
fn overlaps_carry_the_numbers() {
    let mut layout = balena_spec(TableKind::Gpt).compute().unwrap();
    // Grow root A by 4 MiB into root B.
    layout.partitions[1].sectors += 8192;
    let e = layout.validate().unwrap_err();
    assert!(
        matches!(&e, LayoutError::Overlap { a, a_start: 90112, a_end: 753664, b, b_start: 745472, b_end: 1400832 }
            if a == "resin-rootA" && b == "resin-rootB"),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "resin-rootA [90112, 753664) overlaps resin-rootB [745472, 1400832) (512-byte sectors)"
    );

    // A gap of 0 puts the boot partition on the table itself.
    let mut spec = balena_spec(TableKind::Mbr);
    spec.gap_bytes = 0;
    let e = spec.compute().unwrap_err();
    assert!(
        matches!(&e, LayoutError::Overlap { a, b, .. } if a == "resin-boot" && b == "the MBR"),
        "{e}"
    );

    // Data running into the backup GPT.
    let mut layout = balena_spec(TableKind::Gpt).compute().unwrap();
    layout.disk_sectors = layout.get(Role::Data).unwrap().end() + 16;
    let e = layout.validate().unwrap_err();
    assert!(
        matches!(&e, LayoutError::Overlap { b, .. } if b == "the backup GPT"),
        "{e}"
    );

    // Past the end of the disk.
    layout.disk_sectors = layout.get(Role::Data).unwrap().end() - 8192;
    let e = layout.validate().unwrap_err();
    assert!(
        matches!(&e, LayoutError::OutsideDisk { label, .. } if label == "resin-data"),
        "{e}"
    );

    // The table writer refuses an invalid layout before writing.
    let dir = tempfile::tempdir().unwrap();
    let f = sparse_file(&dir.path().join("x"), layout.disk_bytes());
    let e = write_partition_table(&layout, &DiskIds::derive(&[0; 32]), &mut &f).unwrap_err();
    assert!(
        matches!(e, DiskError::Layout(LayoutError::OutsideDisk { .. })),
        "{e}"
    );
}

#[test]
fn the_output_must_match_the_disk_size() {
    let layout = balena_spec(TableKind::Gpt).compute().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let f = sparse_file(&dir.path().join("x"), layout.disk_bytes() - 512);
    let e = write_partition_table(&layout, &DiskIds::derive(&[0; 32]), &mut &f).unwrap_err();
    assert!(matches!(e, DiskError::OutputSize { .. }), "{e}");
}

#[test]
fn sizes_round_up_to_the_alignment() {
    let mut spec = balena_spec(TableKind::Gpt);
    spec.boot_bytes = 40 * MIB + 1;
    spec.gap_bytes = 1;
    let l = spec.compute().unwrap();
    let boot = l.get(Role::Boot).unwrap();
    assert_eq!(boot.start, 8192);
    assert_eq!(boot.sectors, 44 * 2048);
}

#[test]
fn zero_sizes_and_bad_alignment_are_errors() {
    let mut spec = balena_spec(TableKind::Mbr);
    spec.state_bytes = 0;
    let e = spec.compute().unwrap_err();
    assert!(matches!(e, LayoutError::ZeroSize { ref label } if label == "resin-state"));
    let mut spec = balena_spec(TableKind::Mbr);
    spec.alignment_bytes = 1000;
    assert!(matches!(
        spec.compute(),
        Err(LayoutError::BadAlignment {
            alignment_bytes: 1000
        })
    ));
}

#[test]
fn mbr_ebrs_are_checked() {
    let mut l = balena_spec(TableKind::Mbr).compute().unwrap();
    // Move data's EBR into state.
    let state_end = l.get(Role::State).unwrap().end();
    l.partitions[4].ebr = Some(state_end - 1);
    let e = l.validate().unwrap_err();
    assert!(
        matches!(e, LayoutError::Overlap { ref a, ref b, .. } if a == "resin-state" && b == "the EBR of resin-data"),
        "{e}"
    );
}

#[test]
fn mbr_limit() {
    let mut spec = balena_spec(TableKind::Mbr);
    spec.data_bytes = 3 << 40;
    let e = spec.compute().unwrap_err();
    assert!(
        matches!(e, LayoutError::MbrLimit { ref label, .. } if label == "resin-data" || label == "extended"),
        "{e}"
    );
    spec.table = TableKind::Gpt;
    spec.compute().unwrap();
}
