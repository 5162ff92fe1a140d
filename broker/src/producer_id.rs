//! Producer ids for `InitProducerId`, unique across restarts.
//!
//! Ids are handed out from blocks of [`BLOCK`]; the end of the current block is persisted
//! (atomically) before any id from it is used, so after a crash the next start skips to a
//! fresh block and never repeats an id.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chorus_storage::io::Io;

use crate::error::{BrokerError, Result};

pub const BLOCK: i64 = 1000;
const FILE: &str = "producer-ids";

#[derive(Debug)]
struct State {
    next: i64,
    block_end: i64,
    /// Latest epoch handed out per producer id (for KIP-360 epoch bumps).
    epochs: HashMap<i64, i16>,
}

#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    io: Io,
    state: Mutex<State>,
}

impl ProducerIds {
    pub fn open(data_dir: &Path) -> Result<Self> {
        let path = data_dir.join(FILE);
        let next = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().map_err(|_| {
                BrokerError::Log(chorus_storage::LogError::DamagedMetadata {
                    path: path.clone(),
                    reason: "not a number".into(),
                })
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(BrokerError::Log(chorus_storage::LogError::Io {
                    op: chorus_storage::error::IoOp::Read,
                    path,
                    source: e,
                }))
            }
        };
        Ok(ProducerIds {
            path,
            io: Io::new(),
            state: Mutex::new(State {
                next,
                block_end: next,
                epochs: HashMap::new(),
            }),
        })
    }

    /// A new producer id with epoch 0. Blocking (may persist a new block).
    pub fn allocate(&self) -> Result<(i64, i16)> {
        let mut st = self.state.lock().expect("producer id lock");
        if st.next >= st.block_end {
            let end = st.block_end + BLOCK;
            self.io
                .write_atomic(&self.path, end.to_string().as_bytes())?;
            st.block_end = end;
        }
        let id = st.next;
        st.next += 1;
        st.epochs.insert(id, 0);
        Ok((id, 0))
    }

    /// Bumps the epoch of an existing producer (KIP-360). `epoch` must be the producer's
    /// current epoch; an older one is fenced. An epoch about to overflow gets a new id.
    pub fn bump(&self, id: i64, epoch: i16) -> Result<(i64, i16)> {
        let mut st = self.state.lock().expect("producer id lock");
        let current = *st.epochs.get(&id).unwrap_or(&epoch);
        if epoch < current {
            return Err(BrokerError::InvalidProducerEpoch {
                producer_id: id,
                current,
                found: epoch,
            });
        }
        if epoch == i16::MAX - 1 {
            drop(st);
            return self.allocate();
        }
        st.epochs.insert(id, epoch + 1);
        Ok((id, epoch + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_never_repeat_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::open(dir.path()).unwrap();
        let (first, _) = a.allocate().unwrap();
        let (second, _) = a.allocate().unwrap();
        assert_eq!(second, first + 1);
        drop(a);
        let b = ProducerIds::open(dir.path()).unwrap();
        let (third, epoch) = b.allocate().unwrap();
        assert!(third >= BLOCK, "a restart starts a fresh block: {third}");
        assert_eq!(epoch, 0);
    }

    #[test]
    fn epochs_bump_and_old_epochs_are_fenced() {
        let dir = tempfile::tempdir().unwrap();
        let ids = ProducerIds::open(dir.path()).unwrap();
        let (id, e) = ids.allocate().unwrap();
        assert_eq!(ids.bump(id, e).unwrap(), (id, 1));
        assert!(matches!(
            ids.bump(id, 0),
            Err(BrokerError::InvalidProducerEpoch { current: 1, .. })
        ));
    }
}
