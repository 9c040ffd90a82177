//! Waiting for markers on a VM's serial console.
//!
//! The console of one boot interleaves three writers: the kernel (printk),
//! PID 1 (status lines such as `Reached target Multi-User System.`) and
//! journald (units with `StandardOutput=journal+console`). Nothing orders
//! lines of different writers, so a wait never assumes an order: every
//! marker is looked for in everything this boot printed, from its first
//! byte, and a wait for several markers is a wait for a set. A test that
//! needs an order asks the system for it (a unit ordered after another
//! prints a line of its own) rather than reading it from console timing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;

/// How often the console file is read.
const POLL: Duration = Duration::from_millis(250);

/// What a wait needs of its markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Need {
    /// Every marker, in any order.
    All,
    /// At least one marker.
    Any,
}

/// The console log of one boot (QEMU writes it to a file of its own per
/// process; a VM restarted in the same directory gets a new file).
#[derive(Debug)]
pub(crate) struct Console {
    path: PathBuf,
    started: Instant,
}

/// What a wait saw: per marker, when it was first seen (time since the VM
/// started, as precise as the poll interval) and where it is in the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sightings {
    pub(crate) seen: Vec<Option<(Duration, usize)>>,
}

impl Sightings {
    /// The index of the marker that appears first in the console.
    pub(crate) fn earliest(&self) -> Option<usize> {
        self.seen
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|(_, pos)| (pos, i)))
            .min()
            .map(|(_, i)| i)
    }

    /// When each marker was first seen; `None` for one never seen.
    pub(crate) fn times(&self) -> Vec<Option<Duration>> {
        self.seen.iter().map(|s| s.map(|(t, _)| t)).collect()
    }
}

impl Console {
    pub(crate) fn new(path: PathBuf, started: Instant) -> Console {
        Console { path, started }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Everything this boot printed so far.
    pub(crate) fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.path).unwrap_or_default()
    }

    /// Appends to `bytes` what the console holds beyond its length.
    fn read_more(&self, bytes: &mut Vec<u8>) {
        use std::io::{Read as _, Seek as _, SeekFrom};
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return;
        };
        if file.seek(SeekFrom::Start(bytes.len() as u64)).is_ok() {
            let _ = file.read_to_end(bytes);
        }
    }

    /// Polls the console until `need` holds for `markers`, the VM exits
    /// (`exited` returns its status) or `timeout` passes. A marker counts
    /// wherever it is in the console, whatever came before or after it.
    pub(crate) fn wait(
        &self,
        markers: &[&str],
        need: Need,
        timeout: Duration,
        mut exited: impl FnMut() -> Option<String>,
    ) -> anyhow::Result<Sightings> {
        let deadline = Instant::now() + timeout;
        let mut sightings = Sightings {
            seen: vec![None; markers.len()],
        };
        // The console only grows while a wait runs: each poll reads what was
        // appended and searches it, plus the tail a marker may straddle (a
        // poll of the whole file each time cost a quarter of a core with
        // four VMs booting).
        let mut bytes = Vec::new();
        let mut searched: usize = 0;
        loop {
            self.read_more(&mut bytes);
            let now = self.started.elapsed();
            for (marker, seen) in markers.iter().zip(sightings.seen.iter_mut()) {
                if seen.is_none() {
                    let from = searched.saturating_sub(marker.len().saturating_sub(1));
                    *seen = find(&bytes[from..], marker.as_bytes()).map(|pos| (now, from + pos));
                }
            }
            searched = bytes.len();
            let done = match need {
                Need::All => sightings.seen.iter().all(Option::is_some),
                Need::Any => sightings.seen.iter().any(Option::is_some),
            };
            if done {
                return Ok(sightings);
            }
            let missing = || {
                markers
                    .iter()
                    .zip(&sightings.seen)
                    .filter(|(_, s)| s.is_none())
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>()
            };
            if let Some(status) = exited() {
                bail!(
                    "the VM exited ({status}) with {:?} not on the console",
                    missing()
                );
            }
            if Instant::now() >= deadline {
                bail!("{:?} not on the console within {timeout:?}", missing());
            }
            std::thread::sleep(POLL);
        }
    }
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    fn console(dir: &Path) -> Console {
        Console::new(dir.join("serial.log"), Instant::now())
    }

    fn append(path: &Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn find_locates_markers() {
        assert_eq!(find(b"abc marker def", b"marker"), Some(4));
        assert_eq!(find(b"abc", b"marker"), None);
    }

    /// Issue 20: the boot report (through journald) and PID 1's target line
    /// reach the console in either order; a wait for both, or two waits one
    /// after the other, succeed in both orders.
    #[test]
    fn issue_20_markers_are_found_in_either_order() {
        for lines in [
            [
                "globular: image=w boots=1\n",
                "Reached target Multi-User System.\n",
            ],
            [
                "Reached target Multi-User System.\n",
                "globular: image=w boots=1\n",
            ],
        ] {
            let dir = tempfile::tempdir().unwrap();
            let c = console(dir.path());
            for line in lines {
                append(c.path(), line);
            }
            let short = Duration::from_secs(1);
            let both = c
                .wait(&["boots=1", "Multi-User System."], Need::All, short, || {
                    None
                })
                .unwrap();
            assert!(both.times().iter().all(Option::is_some), "{lines:?}");
            // One wait after the other, in the order a test would write them.
            c.wait(&["boots=1"], Need::All, short, || None).unwrap();
            c.wait(&["Multi-User System."], Need::All, short, || None)
                .unwrap();
        }
    }

    #[test]
    fn a_set_completes_as_lines_arrive_and_records_first_sightings() {
        let dir = tempfile::tempdir().unwrap();
        let c = console(dir.path());
        let path = c.path().to_owned();
        append(&path, "B\n");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            append(&path, "A\n");
        });
        let s = c
            .wait(&["A", "B"], Need::All, Duration::from_secs(10), || None)
            .unwrap();
        writer.join().unwrap();
        let t = s.times();
        assert!(t[1].unwrap() < t[0].unwrap(), "{t:?}");
        assert_eq!(s.earliest(), Some(1));
    }

    /// Each poll searches only what was appended since the last one: a
    /// marker written in two pieces, across polls, is still found, at its
    /// place in the whole console.
    #[test]
    fn a_marker_split_across_polls_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let c = console(dir.path());
        let path = c.path().to_owned();
        append(&path, "kernel line\nglobular: ima");
        let writer = std::thread::spawn(move || {
            std::thread::sleep(POLL * 3);
            append(&path, "ge=w boots=1\n");
        });
        let s = c
            .wait(
                &["globular: image=w"],
                Need::All,
                Duration::from_secs(10),
                || None,
            )
            .unwrap();
        writer.join().unwrap();
        assert_eq!(s.seen[0].map(|(_, pos)| pos), Some(12));
    }

    #[test]
    fn any_returns_the_marker_first_in_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let c = console(dir.path());
        append(c.path(), "x is corrupted\ny Failed to mount\n");
        let s = c
            .wait(
                &["Failed to mount", "is corrupted", "Multi-User System."],
                Need::Any,
                Duration::from_secs(1),
                || None,
            )
            .unwrap();
        assert_eq!(s.earliest(), Some(1));
        assert_eq!(s.times()[2], None);
    }

    #[test]
    fn a_missing_marker_times_out_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let c = console(dir.path());
        append(c.path(), "A\n");
        let err = c
            .wait(&["A", "B"], Need::All, Duration::from_millis(300), || None)
            .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("[\"B\"]") && !msg.contains("\"A\""), "{msg}");
    }

    #[test]
    fn an_exited_vm_ends_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let c = console(dir.path());
        let err = c
            .wait(&["A"], Need::All, Duration::from_secs(60), || {
                Some("exit status: 1".into())
            })
            .unwrap_err();
        assert!(format!("{err:#}").contains("exited (exit status: 1)"));
    }
}
