//! The per-partition checkpoint file: where recovery may start trusting the log, the log start
//! offset, how far compaction has cleaned, and whether the last close was clean.
//!
//! A few `key value` lines, replaced atomically. A missing or unreadable checkpoint is not an
//! error: recovery then validates every segment, which is slower but safe.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::io::Io;

pub(crate) const CHECKPOINT_FILE: &str = "partition.checkpoint";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Checkpoint {
    /// Every segment that ends at or before this offset was synced and may be trusted.
    pub recovery_point: i64,
    pub log_start: i64,
    /// Offsets below this have been compacted at least once.
    pub cleaner_point: i64,
    /// The log was closed cleanly and nothing has been written since.
    pub clean_shutdown: bool,
}

pub(crate) fn path(dir: &Path) -> PathBuf {
    dir.join(CHECKPOINT_FILE)
}

impl Checkpoint {
    /// Reads the checkpoint; `None` when there is none or it does not parse.
    pub fn read(dir: &Path) -> Option<Checkpoint> {
        let text = std::fs::read_to_string(path(dir)).ok()?;
        let parsed = Checkpoint::parse(&text);
        if parsed.is_none() {
            tracing::warn!(dir = %dir.display(), "partition checkpoint is unreadable; validating every segment");
        }
        parsed
    }

    fn parse(text: &str) -> Option<Checkpoint> {
        let mut cp = Checkpoint::default();
        let mut seen = 0;
        for line in text.lines() {
            let (key, value) = line.split_once(' ')?;
            match key {
                "version" if value == "1" => {}
                "version" => return None,
                "recovery_point" => cp.recovery_point = value.parse().ok()?,
                "log_start" => cp.log_start = value.parse().ok()?,
                "cleaner_point" => cp.cleaner_point = value.parse().ok()?,
                "clean_shutdown" => cp.clean_shutdown = value == "1",
                _ => continue,
            }
            seen += 1;
        }
        (seen == 5).then_some(cp)
    }

    pub fn write(&self, io: &Io, dir: &Path) -> Result<()> {
        let text = format!(
            "version 1\nrecovery_point {}\nlog_start {}\ncleaner_point {}\nclean_shutdown {}\n",
            self.recovery_point,
            self.log_start,
            self.cleaner_point,
            u8::from(self.clean_shutdown)
        );
        io.write_atomic(&path(dir), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let cp = Checkpoint {
            recovery_point: 42,
            log_start: 7,
            cleaner_point: 30,
            clean_shutdown: true,
        };
        cp.write(&Io::new(), dir.path()).unwrap();
        assert_eq!(Checkpoint::read(dir.path()), Some(cp));
        std::fs::write(path(dir.path()), "version 1\nrecovery_point 4x\n").unwrap();
        assert_eq!(Checkpoint::read(dir.path()), None);
        std::fs::write(path(dir.path()), "version 1\nrecovery_point 4\n").unwrap();
        assert_eq!(Checkpoint::read(dir.path()), None, "incomplete");
    }
}
