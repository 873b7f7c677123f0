//! What the closure check and the stripper need to know about an ELF file.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use goblin::elf::header::{EI_CLASS, EI_DATA, ELFCLASS64, ELFDATA2LSB, EM_AARCH64, EM_X86_64};
use goblin::elf::program_header::PT_INTERP;
use kiln_fstree::Data;

pub(crate) use goblin::elf::header::{ET_DYN, ET_EXEC};

const MAGIC: &[u8; 4] = b"\x7fELF";

/// The parts of an ELF file Kiln looks at, owned so the bytes can go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ElfInfo {
    pub machine: u16,
    pub class64: bool,
    pub little_endian: bool,
    /// `e_type`: [`ET_EXEC`], [`ET_DYN`], …
    pub e_type: u16,
    /// `PT_INTERP`, the dynamic linker.
    pub interp: Option<String>,
    /// Whether a `PT_INTERP` segment exists (an executable, PIE or not).
    pub has_interp: bool,
    /// `DT_NEEDED`, in order.
    pub needed: Vec<String>,
    /// `DT_RUNPATH` and `DT_RPATH`, each split on `:`.
    pub runpath: Vec<String>,
    pub rpath: Vec<String>,
}

impl ElfInfo {
    pub fn parse(bytes: &[u8]) -> Result<ElfInfo, String> {
        let elf = goblin::elf::Elf::parse(bytes).map_err(|e| e.to_string())?;
        let split = |v: &[&str]| -> Vec<String> {
            v.iter()
                .flat_map(|s| s.split(':'))
                .map(str::to_string)
                .collect()
        };
        Ok(ElfInfo {
            machine: elf.header.e_machine,
            class64: elf.header.e_ident[EI_CLASS] == ELFCLASS64,
            little_endian: elf.header.e_ident[EI_DATA] == ELFDATA2LSB,
            e_type: elf.header.e_type,
            interp: elf.interpreter.map(str::to_string),
            has_interp: elf.program_headers.iter().any(|p| p.p_type == PT_INTERP),
            needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
            runpath: split(&elf.runpaths),
            rpath: split(&elf.rpaths),
        })
    }

    /// Whether the file runs on `arch` (as [`crate::OsInfo::arch`]).
    pub fn is_for(&self, arch: &str) -> bool {
        let machine = match arch {
            "aarch64" => EM_AARCH64,
            "x86_64" => EM_X86_64,
            _ => return false,
        };
        self.machine == machine && self.class64 && self.little_endian
    }

    /// `x86_64, 64-bit little-endian`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "{}, {}-bit {}-endian",
            goblin::elf::header::machine_to_str(self.machine).to_ascii_lowercase(),
            if self.class64 { 64 } else { 32 },
            if self.little_endian { "little" } else { "big" }
        )
    }
}

/// The whole content if it starts with the ELF magic; `None` otherwise,
/// after reading at most four bytes.
pub(crate) fn read_if_elf(data: &Data) -> io::Result<Option<Vec<u8>>> {
    match data {
        Data::Bytes(b) => Ok(b.starts_with(MAGIC).then(|| b.clone())),
        Data::Path(p) => {
            let mut f = File::open(p)?;
            let mut bytes = Vec::new();
            (&mut f).take(4).read_to_end(&mut bytes)?;
            if bytes != MAGIC {
                return Ok(None);
            }
            f.read_to_end(&mut bytes)?;
            Ok(Some(bytes))
        }
    }
}

/// Where a file's bytes are read from, for I/O error messages.
pub(crate) fn host_path(path: &str, data: &Data) -> PathBuf {
    match data {
        Data::Path(p) => p.clone(),
        Data::Bytes(_) => path.into(),
    }
}
