//! An attempt's scratch dir (`grants.scratch`) and its disk quota: the dir
//! is made fresh for the attempt and removed after it; while the guest runs
//! a watcher measures what the dir holds on disk (allocated blocks, so a
//! sparse file counts for what it really takes) and how many entries, and
//! stops the attempt (`disk_limit`) once either is over its quota. WASI
//! gives no hook on each write, so a guest may pass the quota by what it
//! writes between two looks ([`WATCH_EVERY`]); each attempt's quota is
//! reserved from the host's scratch budget, so all of them together stay
//! within the disk's free space.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::model::limits::bytes_display;
use tokio_util::sync::CancellationToken;

/// How often the watcher measures the dir.
pub const WATCH_EVERY: Duration = Duration::from_millis(20);

/// Files and directories a scratch dir may hold.
pub const MAX_ENTRIES: u64 = 10_000;

/// Half the free space where scratch dirs are made (at least 64 MiB), or
/// 16 GiB when it cannot be read.
pub fn default_budget(root: &Path) -> u64 {
    match rustix::fs::statvfs(root) {
        Ok(s) => (s.f_bavail.saturating_mul(s.f_frsize) / 2).max(64 << 20),
        Err(_) => 16 << 30,
    }
}

/// Bytes allocated on disk and entries under `dir` (symlinks not followed;
/// the walk stops once past `MAX_ENTRIES`).
pub fn usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(read) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in read.flatten() {
            entries += 1;
            if entries > MAX_ENTRIES {
                return (bytes, entries);
            }
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            bytes += meta.blocks() * 512;
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    (bytes, entries)
}

/// Watches one attempt's scratch dir; dropping it stops the watcher.
pub struct Watch {
    /// Why the attempt was stopped, once it was.
    pub over: Arc<Mutex<Option<String>>>,
    /// Told when `over` is set.
    pub tripped: Arc<Notify>,
    stop: CancellationToken,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Watch {
    pub fn start(dir: PathBuf, quota: u64) -> Watch {
        let over = Arc::new(Mutex::new(None));
        let tripped = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let (o, t, s) = (over.clone(), tripped.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.cancelled() => return,
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                }
                let d = dir.clone();
                let Ok((bytes, entries)) = tokio::task::spawn_blocking(move || usage(&d)).await
                else {
                    return;
                };
                let why = if bytes > quota {
                    Some(format!(
                        "the scratch dir holds {} on disk, over its quota of {}",
                        bytes_display(bytes),
                        bytes_display(quota)
                    ))
                } else if entries > MAX_ENTRIES {
                    Some(format!(
                        "the scratch dir holds over {MAX_ENTRIES} files and directories"
                    ))
                } else {
                    None
                };
                if let Some(why) = why {
                    *o.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
                    t.notify_one();
                    return;
                }
            }
        });
        Watch {
            over,
            tripped,
            stop,
        }
    }

    /// Stops watching (the guest has stopped).
    pub fn stop_now(&self) {
        self.stop.cancel();
    }

    pub fn reason(&self) -> Option<String> {
        self.over.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_counts_allocated_blocks_and_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), vec![1u8; 50_000]).unwrap();
        // A sparse file: 1 GiB long, nearly nothing on disk.
        let f = std::fs::File::create(dir.path().join("sparse")).unwrap();
        f.set_len(1 << 30).unwrap();
        let (bytes, entries) = usage(dir.path());
        assert_eq!(entries, 4);
        assert!((150_000..400_000).contains(&bytes), "{bytes}");
    }
}
