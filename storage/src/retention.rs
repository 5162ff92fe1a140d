//! Retention for `cleanup.policy` containing `delete`: whole segments go when they are older
//! than `retention.ms` (by their largest record timestamp) or while the log minus them is still
//! at least `retention.bytes`. The active segment is rolled first when it has expired itself,
//! as Kafka does, so an idle topic's data does not outlive its retention.

use crate::error::Result;
use crate::log::Log;
use crate::segment::Segment;

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: i64,
}

fn expired(seg: &Segment, now: i64, retention_ms: i64) -> bool {
    if seg.is_empty() {
        return true;
    }
    let newest = if seg.max_timestamp() >= 0 {
        seg.max_timestamp()
    } else {
        seg.first_append_ms()
    };
    now - newest > retention_ms
}

impl Log {
    /// Deletes segments beyond the retention limits. A no-op unless the policy includes
    /// `delete`.
    pub fn apply_retention(&self) -> Result<RetentionOutcome> {
        let config = self.config();
        let mut outcome = RetentionOutcome {
            log_start_offset: self.log_start_offset(),
            ..RetentionOutcome::default()
        };
        if !config.cleanup_policy.delete {
            return Ok(outcome);
        }
        let _m = self.maintenance_lock();
        let now = self.now_ms();
        if config.retention_ms >= 0 {
            let active = self.active();
            if !active.is_empty() && expired(&active, now, config.retention_ms) {
                self.roll()?;
            }
        }
        let segs = self.segments();
        let sealed = &segs[..segs.len() - 1];
        let mut n = 0;
        if config.retention_ms >= 0 {
            n = sealed
                .iter()
                .take_while(|s| expired(s, now, config.retention_ms))
                .count();
        }
        if config.retention_bytes >= 0 {
            let total: u64 = segs[n..].iter().map(|s| s.size()).sum();
            let mut excess = total as i64 - config.retention_bytes;
            for seg in &sealed[n..] {
                if excess - (seg.size() as i64) < 0 {
                    break;
                }
                excess -= seg.size() as i64;
                n += 1;
            }
        }
        if n == 0 {
            return Ok(outcome);
        }
        outcome.segments_deleted = n;
        outcome.bytes_deleted = segs[..n].iter().map(|s| s.size()).sum();
        self.delete_oldest_segments(n)?;
        outcome.log_start_offset = self.log_start_offset();
        tracing::info!(
            dir = %self.dir().display(),
            segments = n,
            bytes = outcome.bytes_deleted,
            log_start = outcome.log_start_offset,
            "retention deleted segments"
        );
        Ok(outcome)
    }
}
