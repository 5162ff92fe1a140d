//! The gateway's cache of group member lists: entries live for a TTL and are dropped as
//! soon as the group's membership event arrives, so a change is seen at once and a missed
//! event costs at most one TTL. Each entry also carries the membership store's version it
//! was read at: in one process the store changes a moment after the event is in the log,
//! and a list read in that moment must not outlive it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::HashMap;

#[derive(Debug)]
pub struct MembershipCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug)]
struct Entry {
    at: Instant,
    /// The membership store's version when the list was read.
    version: u64,
    /// Shared with the fan-outs that use it: a big group's list is not copied per message.
    members: Arc<[String]>,
}

impl MembershipCache {
    pub fn new(ttl: Duration) -> Self {
        MembershipCache {
            ttl,
            entries: Mutex::new(HashMap::default()),
        }
    }

    /// The cached list, if it is younger than the TTL and was read at `version`.
    pub fn get(&self, group: &str, version: u64) -> Option<Arc<[String]>> {
        let entries = self.entries.lock().expect("cache lock");
        let e = entries.get(group)?;
        (e.at.elapsed() < self.ttl && e.version == version).then(|| e.members.clone())
    }

    pub fn put(&self, group: &str, version: u64, members: Arc<[String]>) {
        self.entries.lock().expect("cache lock").insert(
            group.to_string(),
            Entry {
                at: Instant::now(),
                version,
                members,
            },
        );
    }

    pub fn invalidate(&self, group: &str) {
        self.entries.lock().expect("cache lock").remove(group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_invalidate() {
        let cache = MembershipCache::new(Duration::from_millis(50));
        cache.put("g", 1, Arc::from(vec!["a".to_string()]));
        assert_eq!(cache.get("g", 1).as_deref(), Some(&["a".to_string()][..]));
        assert_eq!(cache.get("g", 2), None, "the store changed since");
        cache.invalidate("g");
        assert_eq!(cache.get("g", 1), None);
        cache.put("g", 1, Arc::from(vec!["b".to_string()]));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.get("g", 1), None);
    }
}
