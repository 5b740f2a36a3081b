//! Reading the small files the proxy depends on (configuration, secret files, certificates, CA bundles, the
//! federated token file, the device-code cache, the Arc key file) so that no file can stall the process.
//!
//! - **Regular files only.** The path is checked with `stat` first, so a FIFO, socket, device or directory is
//!   refused without ever being opened (opening a FIFO for reading waits for a writer, forever). The file is then
//!   opened with `O_NONBLOCK` and checked again with `fstat` on the open handle, so swapping a FIFO in between the
//!   two steps gains nothing.
//! - **Bounded in size.** A read stops one byte past its limit, so a file larger than expected is refused instead of
//!   loaded.
//! - **Bounded in time, off the async workers.** The work runs on a thread of its own ([`read`], for synchronous
//!   callers such as the configuration loader) or on tokio's blocking pool ([`read_async`]), and the caller waits
//!   at most [`READ_TIMEOUT`]. A read still stuck after that (a hung network mount) is abandoned with an error
//!   naming the file; its thread ends whenever the kernel lets it. At most [`MAX_PENDING`] reads may be running at
//!   once, so stuck ones cannot pile up threads: beyond that, reads fail at once.
//!
//! Errors name the file and what is wrong with it, never its content.

use std::fs::{File, FileType, Metadata, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use zeroize::Zeroizing;

/// How long a caller waits for one file to be checked and read.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Reads that may be running at once (stuck ones included); beyond this, reads fail at once with
/// [`FileError::Busy`].
pub const MAX_PENDING: usize = 16;

/// The reads running now, in any thread.
static PENDING: Limiter = Limiter::new(MAX_PENDING);

/// Who besides the owner may have access to a file.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// Any permissions.
    Any,
    /// The file is refused with [`FileError::Shared`], before it is read, when `refused(mode, owner_uid)` is true
    /// (`mode` is the permission bits, `mode & 0o7777`).
    Private(fn(u32, u32) -> bool),
}

/// Why a file could not be used. Messages name the file, never its content.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// `stat` or `open` failed (missing, permission denied…).
    #[error("cannot open {}: {error}", .path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The path is a FIFO, socket, device or directory: refused without being read.
    #[error("{} is {kind}, not a regular file", .path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead (`a FIFO (named pipe)`, `a directory`…).
        kind: &'static str,
    },
    /// Group or others have more access than [`Access::Private`] allows.
    #[error("{} is accessible by group or others (mode {mode:04o})", .path.display())]
    Shared {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than the caller's limit.
    #[error("{} is larger than {limit} bytes", .path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit, in bytes.
        limit: u64,
    },
    /// Reading failed.
    #[error("cannot read {}: {error}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        error: io::Error,
    },
    /// The read did not finish in time (a hung network mount); it was abandoned.
    #[error("reading {} did not finish within {}s (a hung network mount?)", .path.display(), .after.as_secs_f32())]
    TimedOut {
        /// The file.
        path: PathBuf,
        /// How long the caller waited.
        after: Duration,
    },
    /// Too many earlier reads are still running (stuck on a hung file system); this one was not started.
    #[error("not reading {}: {MAX_PENDING} earlier file reads have not finished (a hung network mount?)", .path.display())]
    Busy {
        /// The file.
        path: PathBuf,
    },
}

/// Counts running reads against a maximum.
#[derive(Debug)]
struct Limiter {
    running: AtomicUsize,
    max: usize,
}

/// One running read; dropped (on whatever thread) when the read ends.
struct Pending(&'static Limiter);

// === impl FileError ===

impl FileError {
    /// What went wrong, without the file's name (for messages that name it already).
    pub fn reason(&self) -> String {
        match self {
            FileError::Open { error, .. } | FileError::Read { error, .. } => error.to_string(),
            FileError::NotRegular { kind, .. } => format!("{kind}, not a regular file"),
            FileError::Shared { mode, .. } => {
                format!("accessible by group or others (mode {mode:04o})")
            }
            FileError::TooLarge { limit, .. } => format!("larger than {limit} bytes"),
            FileError::TimedOut { after, .. } => format!(
                "reading did not finish within {}s (a hung network mount?)",
                after.as_secs_f32()
            ),
            FileError::Busy { .. } => format!(
                "not read: {MAX_PENDING} earlier file reads have not finished (a hung network mount?)"
            ),
        }
    }

    /// True when the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Open { error, .. } if error.kind() == io::ErrorKind::NotFound)
    }
}

// === impl Limiter ===

impl Limiter {
    const fn new(max: usize) -> Self {
        Self {
            running: AtomicUsize::new(0),
            max,
        }
    }

    /// Claims a slot for `path`, or [`FileError::Busy`] when `max` reads are already running.
    fn claim(&'static self, path: &Path) -> Result<Pending, FileError> {
        self.running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .map(|_| Pending(self))
            .map_err(|_| FileError::Busy {
                path: path.to_path_buf(),
            })
    }
}

// === impl Pending ===

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads `path` (at most `limit` bytes) on a thread of its own, waiting at most [`READ_TIMEOUT`]. For
/// synchronous callers; it blocks the calling thread, so async code uses [`read_async`].
pub fn read(path: &Path, limit: u64, access: Access) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let owned = path.to_path_buf();
    off_thread(path, READ_TIMEOUT, move || read_now(&owned, limit, access))?
}

/// [`read`] for async callers: on tokio's blocking pool, so no async worker ever waits on the file system.
pub async fn read_async(
    path: &Path,
    limit: u64,
    access: Access,
) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let owned = path.to_path_buf();
    off_thread_async(path, READ_TIMEOUT, move || read_now(&owned, limit, access)).await?
}

/// Checks that `path` is a regular file that `access` allows and can be opened for reading, without reading it.
/// Bounded like [`read`].
pub fn check(path: &Path, access: Access) -> Result<Metadata, FileError> {
    let owned = path.to_path_buf();
    off_thread(path, READ_TIMEOUT, move || {
        open_regular(&owned, access).map(|(_, meta)| meta)
    })?
}

/// Runs `job`, file-system work about `path`, on a new thread and waits for it at most `timeout`.
pub fn off_thread<T: Send + 'static>(
    path: &Path,
    timeout: Duration,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FileError> {
    off_thread_limited(&PENDING, path, timeout, job)
}

fn off_thread_limited<T: Send + 'static>(
    limiter: &'static Limiter,
    path: &Path,
    timeout: Duration,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FileError> {
    let pending = limiter.claim(path)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("aml-file-read".to_owned())
        .spawn(move || {
            let _pending = pending;
            let _ = tx.send(job());
        })
        .map_err(|error| FileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    rx.recv_timeout(timeout).map_err(|_| FileError::TimedOut {
        path: path.to_path_buf(),
        after: timeout,
    })
}

/// Runs `job`, file-system work about `path`, on tokio's blocking pool and waits for it at most `timeout`.
pub async fn off_thread_async<T: Send + 'static>(
    path: &Path,
    timeout: Duration,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, FileError> {
    let pending = PENDING.claim(path)?;
    let task = tokio::task::spawn_blocking(move || {
        let _pending = pending;
        job()
    });
    match tokio::time::timeout(timeout, task).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(join)) => Err(FileError::Read {
            path: path.to_path_buf(),
            error: io::Error::other(join.to_string()),
        }),
        Err(_) => Err(FileError::TimedOut {
            path: path.to_path_buf(),
            after: timeout,
        }),
    }
}

/// Checks, opens and reads `path` on the current thread: at most `limit` bytes, zeroed when dropped.
pub fn read_now(path: &Path, limit: u64, access: Access) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let (file, _) = open_regular(path, access)?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| FileError::Read {
            path: path.to_path_buf(),
            error,
        })?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(bytes)
}

/// `stat`, then a non-blocking open, then `fstat` on the handle: a regular file that `access` allows, or an error.
pub fn open_regular(path: &Path, access: Access) -> Result<(File, Metadata), FileError> {
    let open_error = |error| FileError::Open {
        path: path.to_path_buf(),
        error,
    };
    // Follows symlinks (Kubernetes mounts Secrets and ConfigMaps through them).
    let before = std::fs::metadata(path).map_err(open_error)?;
    regular(path, before.file_type())?;
    let (file, meta) = open_then_fstat(path)?;
    if let Access::Private(refused) = access
        && let Some(mode) = permission_bits(&meta)
        && refused(mode, owner(&meta))
    {
        return Err(FileError::Shared {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok((file, meta))
}

/// The second half of [`open_regular`]: opens without waiting, then checks what was opened. On its own, it is what
/// protects against a path swapped for a FIFO after the first `stat`.
fn open_then_fstat(path: &Path) -> Result<(File, Metadata), FileError> {
    let file = open_nonblocking(path).map_err(|error| FileError::Open {
        path: path.to_path_buf(),
        error,
    })?;
    let meta = file.metadata().map_err(|error| FileError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    regular(path, meta.file_type())?;
    Ok((file, meta))
}

/// Refuses anything but a regular file, naming what it is.
fn regular(path: &Path, file_type: FileType) -> Result<(), FileError> {
    if file_type.is_file() {
        return Ok(());
    }
    Err(FileError::NotRegular {
        path: path.to_path_buf(),
        kind: describe(file_type),
    })
}

/// What a non-regular file is, for messages.
fn describe(file_type: FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if file_type.is_socket() {
            return "a socket";
        }
        if file_type.is_char_device() {
            return "a character device";
        }
        if file_type.is_block_device() {
            return "a block device";
        }
    }
    if file_type.is_dir() {
        "a directory"
    } else {
        "something else"
    }
}

/// Opens for reading without waiting: `O_NONBLOCK` makes opening a FIFO return at once (it is then refused by
/// `fstat`), and `O_NOCTTY` keeps a terminal device from becoming the controlling terminal.
#[cfg(unix)]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let flags = OFlags::NONBLOCK | OFlags::NOCTTY;
    OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
}

/// Other platforms have no FIFOs to guard against.
#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).open(path)
}

/// The permission bits, where the platform has them.
#[cfg(unix)]
fn permission_bits(meta: &Metadata) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    Some(meta.permissions().mode() & 0o7777)
}

/// Non-Unix platforms have no mode bits to check.
#[cfg(not(unix))]
fn permission_bits(_meta: &Metadata) -> Option<u32> {
    None
}

/// The owner's uid (0 where the platform has none).
#[cfg(unix)]
fn owner(meta: &Metadata) -> u32 {
    use std::os::unix::fs::MetadataExt;
    meta.uid()
}

/// Non-Unix platforms: no owner.
#[cfg(not(unix))]
fn owner(_meta: &Metadata) -> u32 {
    0
}

#[cfg(test)]
mod tests;
