//! Whether every program in a tree finds its shared libraries.
//!
//! A tree trimmed with `RemoveFiles=` (the initrd's is) can lose a library
//! some program it keeps still needs; the program would then fail only when
//! it runs, in the initrd of a booting node. [`check`] reads the `DT_NEEDED`
//! entries of every ELF file in the tree and looks for each library where
//! the dynamic loader would: the file's `RUNPATH`/`RPATH` (`$ORIGIN`
//! expanded), the directories of `/etc/ld.so.conf.d/`, then the default
//! ones. Symlinks are followed inside the tree only.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use object::elf::{FileHeader64, DT_NEEDED, DT_RPATH, DT_RUNPATH};
use object::read::elf::{Dyn as _, FileHeader as _};
use object::Endianness;

use crate::overlay::resolve_in_root;

/// Where glibc's loader looks after the paths a file and ld.so.conf name.
const DEFAULT_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/lib64",
    "/usr/lib",
    "/lib",
];

/// A library a program needs that its tree does not have.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Missing {
    /// The program (or library), as a path inside the tree.
    pub file: String,
    /// The `DT_NEEDED` name not found.
    pub library: String,
}

/// What an ELF file's dynamic section asks of the loader.
#[derive(Debug, Default, PartialEq, Eq)]
struct Dynamic {
    needed: Vec<String>,
    search: Vec<String>,
}

/// Reads the dynamic section of a 64-bit ELF file; `None` for anything else
/// (scripts, data, static programs, kernel modules) and for files that are
/// not valid ELF.
fn dynamic(data: &[u8]) -> Option<Dynamic> {
    let header = FileHeader64::<Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    let sections = header.sections(endian, data).ok()?;
    let (entries, link) = sections.dynamic(endian, data).ok()??;
    let strings = sections.strings(endian, data, link).ok()?;
    let mut out = Dynamic::default();
    for entry in entries {
        let tag = entry.tag(endian);
        if ![DT_NEEDED, DT_RUNPATH, DT_RPATH].contains(&tag) {
            continue;
        }
        let Ok(value) = entry.string(endian, strings) else {
            continue;
        };
        let value = String::from_utf8_lossy(value).into_owned();
        if tag == DT_NEEDED {
            out.needed.push(value);
        } else {
            out.search.extend(value.split(':').map(str::to_owned));
        }
    }
    Some(out)
}

/// The directories of `/etc/ld.so.conf` and `/etc/ld.so.conf.d/*.conf`.
fn configured_dirs(tree: &Path) -> Vec<String> {
    let mut files = vec![tree.join("etc/ld.so.conf")];
    if let Ok(read) = std::fs::read_dir(tree.join("etc/ld.so.conf.d")) {
        let mut confs: Vec<PathBuf> = read
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        confs.sort();
        files.extend(confs);
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .map(|l| l.split('#').next().unwrap_or_default().trim().to_owned())
                .filter(|l| l.starts_with('/'))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether `name` exists in `dir` of the tree (symlinks followed inside it).
fn found(tree: &Path, dir: &str, name: &str) -> bool {
    resolve_in_root(tree, &Path::new(dir).join(name), true).is_ok_and(|p| p.is_file())
}

/// Every library that a program or library in `tree` needs and cannot find;
/// empty when the tree is complete.
pub fn check(tree: &Path) -> anyhow::Result<Vec<Missing>> {
    let configured = configured_dirs(tree);
    let mut missing = BTreeSet::new();
    for entry in walkdir::WalkDir::new(tree).follow_links(false) {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let mut magic = [0u8; 4];
        let is_elf = std::fs::File::open(entry.path())
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok_and(|()| magic == *b"\x7fELF");
        if !is_elf {
            continue;
        }
        let data = std::fs::read(entry.path())?;
        let Some(dynamic) = dynamic(&data) else {
            continue;
        };
        let inside = Path::new("/").join(entry.path().strip_prefix(tree)?);
        let origin = inside
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let search: Vec<String> = dynamic
            .search
            .iter()
            .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
            .chain(configured.iter().cloned())
            .chain(DEFAULT_DIRS.iter().map(|d| (*d).to_owned()))
            // A private library's siblings: systemd's libsystemd-core names
            // libsystemd-shared without a RUNPATH, and gets it because the
            // program that loads both (with its RUNPATH) loaded it first.
            .chain([origin.clone()])
            .collect();
        for library in dynamic.needed {
            let present = if library.contains('/') {
                found(tree, "/", &library)
            } else {
                search.iter().any(|dir| found(tree, dir, &library))
            };
            if !present {
                missing.insert(Missing {
                    file: inside.display().to_string(),
                    library,
                });
            }
        }
    }
    Ok(missing.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test binary itself is a dynamically linked ELF file.
    fn this_program() -> Vec<u8> {
        std::fs::read(std::env::current_exe().unwrap()).unwrap()
    }

    #[test]
    fn reads_the_libraries_a_program_needs() {
        let dynamic = dynamic(&this_program()).expect("a dynamic ELF file");
        assert!(
            dynamic.needed.iter().any(|l| l.starts_with("libc.so")),
            "{dynamic:?}"
        );
    }

    #[test]
    fn other_files_and_garbage_are_not_programs() {
        assert_eq!(dynamic(b"#!/bin/sh\necho hi\n"), None);
        assert_eq!(dynamic(b"\x7fELF\x02\x01\x01"), None);
        let mut elf = this_program();
        elf.truncate(elf.len() / 3);
        // Truncated: whatever it yields, it must not panic.
        let _ = dynamic(&elf);
        for cut in [64, 100, 1000, 4096] {
            let _ = dynamic(&this_program()[..cut]);
        }
    }

    /// A tree with a program whose library was removed is reported, by
    /// program and library; with the library (behind a symlink, as Debian
    /// installs them) it is complete.
    #[test]
    fn a_removed_library_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path();
        let program = this_program();
        let mut needed = dynamic(&program).unwrap().needed;
        needed.sort();
        std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
        std::fs::write(tree.join("usr/bin/prog"), &program).unwrap();
        let missing = check(tree).unwrap();
        assert_eq!(
            missing.iter().map(|m| &m.library).collect::<Vec<_>>(),
            needed.iter().collect::<Vec<_>>()
        );
        assert!(missing.iter().all(|m| m.file == "/usr/bin/prog"));

        let libdir = tree.join("usr/lib/x86_64-linux-gnu");
        std::fs::create_dir_all(&libdir).unwrap();
        for library in &needed {
            std::fs::write(libdir.join(format!("{library}.real")), b"not ELF").unwrap();
            std::os::unix::fs::symlink(format!("{library}.real"), libdir.join(library)).unwrap();
        }
        // Merged /usr: /lib is a relative symlink to usr/lib.
        std::os::unix::fs::symlink("usr/lib", tree.join("lib")).unwrap();
        assert_eq!(check(tree).unwrap(), []);

        // An absolute symlink resolves inside the tree, never on the build
        // host: to a file only the host has, it does not count.
        let first = &needed[0];
        std::fs::remove_file(libdir.join(first)).unwrap();
        std::fs::remove_file(libdir.join(format!("{first}.real"))).unwrap();
        let host = "/etc/passwd";
        assert!(Path::new(host).is_file(), "{host} on the build host");
        std::os::unix::fs::symlink(host, libdir.join(first)).unwrap();
        let missing = check(tree).unwrap();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert_eq!(&missing[0].library, first);
    }
}
