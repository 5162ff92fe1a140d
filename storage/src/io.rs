//! The file layer every write, sync and rename of the engine goes through, with an optional
//! fault injector so tests can make the disk fail (ENOSPC, EIO on fsync, short writes) at
//! chosen moments, and small helpers for atomic replacement of small files.
//!
//! Reads of segment data do not go through the injector: a failed read cannot corrupt anything,
//! and keeping the read path free of it keeps fetches cheap.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{IoOp, LogError, Result};

/// What an injected fault does to a write.
#[derive(Debug)]
pub enum WriteFault {
    /// Fail before writing anything.
    Fail(io::Error),
    /// Write only the first `n` bytes, then fail (a disk that filled up mid-write).
    Short(usize, io::Error),
}

/// Decides, per operation, whether the disk should misbehave. Implemented by tests.
pub trait FaultInjector: Send + Sync + fmt::Debug {
    fn on_write(&self, _path: &Path, _len: usize) -> Option<WriteFault> {
        None
    }
    fn on_sync(&self, _path: &Path) -> Option<io::Error> {
        None
    }
    fn on_rename(&self, _from: &Path, _to: &Path) -> Option<io::Error> {
        None
    }
}

/// The engine's handle on the file system.
#[derive(Clone, Default)]
pub struct Io {
    faults: Option<Arc<dyn FaultInjector>>,
}

impl fmt::Debug for Io {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Io")
            .field("faults", &self.faults.is_some())
            .finish()
    }
}

impl Io {
    pub fn new() -> Self {
        Io::default()
    }

    pub fn with_faults(faults: Arc<dyn FaultInjector>) -> Self {
        Io {
            faults: Some(faults),
        }
    }

    /// Writes all of `buf` at `pos`.
    pub fn write_all_at(&self, file: &File, path: &Path, buf: &[u8], pos: u64) -> Result<()> {
        if let Some(fault) = self
            .faults
            .as_ref()
            .and_then(|f| f.on_write(path, buf.len()))
        {
            let err = match fault {
                WriteFault::Fail(e) => e,
                WriteFault::Short(n, e) => {
                    let n = n.min(buf.len());
                    file.write_all_at(&buf[..n], pos)
                        .map_err(|e| LogError::io(IoOp::Write, path, e))?;
                    e
                }
            };
            return Err(LogError::io(IoOp::Write, path, err));
        }
        file.write_all_at(buf, pos)
            .map_err(|e| LogError::io(IoOp::Write, path, e))
    }

    /// `fdatasync`: the data and the metadata needed to read it back (the file size).
    pub fn sync_data(&self, file: &File, path: &Path) -> Result<()> {
        if let Some(err) = self.faults.as_ref().and_then(|f| f.on_sync(path)) {
            return Err(LogError::io(IoOp::Sync, path, err));
        }
        file.sync_data()
            .map_err(|e| LogError::io(IoOp::Sync, path, e))
    }

    pub fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        if let Some(err) = self.faults.as_ref().and_then(|f| f.on_rename(from, to)) {
            return Err(LogError::io(IoOp::Rename, from, err));
        }
        fs::rename(from, to).map_err(|e| LogError::io(IoOp::Rename, from, e))
    }

    /// Makes a directory's entries (creations, renames, removals) durable.
    pub fn sync_dir(&self, dir: &Path) -> Result<()> {
        let handle = File::open(dir).map_err(|e| LogError::io(IoOp::Open, dir, e))?;
        self.sync_data(&handle, dir)
    }

    /// Replaces `path` with `contents` so that a crash leaves either the old or the new file:
    /// write a temporary file, fsync it, rename it over the target, fsync the directory.
    pub fn write_atomic(&self, path: &Path, contents: &[u8]) -> Result<()> {
        let tmp = tmp_path(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| LogError::io(IoOp::Create, &tmp, e))?;
        let result = self
            .write_all_at(&file, &tmp, contents, 0)
            .and_then(|()| self.sync_data(&file, &tmp))
            .and_then(|()| self.rename(&tmp, path));
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        self.sync_dir(path.parent().unwrap_or(Path::new(".")))
    }
}

/// The temporary name `write_atomic` uses; recovery removes leftovers with this suffix.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Reads up to `len` bytes at `pos` into a new buffer, fewer at end of file.
///
/// Unlike `read_at_most` on a `vec![0; len]`, the buffer is not zeroed first: for fetches of
/// a megabyte per partition the zeroing (and the page faults it takes) showed in profiles as
/// a sizeable share of the read path, only to be overwritten by the kernel's copy.
pub fn read_vec_at(file: &File, path: &Path, len: usize, pos: u64) -> Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    while buf.len() < len {
        let done = buf.len();
        let spare = buf.spare_capacity_mut();
        // SAFETY: pread writes at most `spare.len()` bytes into the spare capacity, which is
        // valid for writes of that length; nothing reads it before `set_len` below covers
        // only what pread reported as written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                (pos + done as u64) as libc::off_t,
            )
        };
        match n {
            0 => break,
            n if n > 0 => {
                // SAFETY: the first `n` bytes of the spare capacity were just written.
                unsafe { buf.set_len(done + n as usize) }
            }
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(LogError::io(IoOp::Read, path, e));
                }
            }
        }
    }
    Ok(buf)
}

/// Reads exactly `buf.len()` bytes at `pos`, or fewer at end of file; returns how many.
pub fn read_at_most(file: &File, path: &Path, buf: &mut [u8], pos: u64) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LogError::io(IoOp::Read, path, e)),
        }
    }
    Ok(done)
}
