//! Unix-domain socket listeners: the socket is created with mode 0600, every connection's peer uid
//! (`SO_PEERCRED`) is checked against the allowed uids, and the socket file is removed when the listener stops.

use std::fs::{self, Permissions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};

/// Mode of a Unix-domain socket listener: only its owner may connect.
pub const UNIX_SOCKET_MODE: u32 = 0o600;

/// How long the start-up check for a live listener on an existing socket file may take.
const STALE_SOCKET_PROBE: Duration = Duration::from_secs(1);

/// A Unix-domain socket listener (see [`bind_unix`]): mode 0600, connections from uids outside `allowed_uids`
/// closed at once, and the socket file removed on drop if it is still the one this listener created.
#[derive(Debug)]
pub struct UnixSocketListener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file, so drop never removes a file someone else put there since.
    file_id: (u64, u64),
    allowed_uids: Vec<u32>,
    /// Whether dropping this listener removes the socket file (false for shared descriptors).
    owns_file: bool,
}

/// Another descriptor of a [`UnixSocketListener`]'s socket, with the same peer rules; it never removes the file.
#[derive(Debug)]
pub struct SharedUnixListener {
    listener: std::os::unix::net::UnixListener,
    path: PathBuf,
    file_id: (u64, u64),
    allowed_uids: Vec<u32>,
}

// === impl UnixSocketListener ===

impl UnixSocketListener {
    /// The socket file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The uids whose connections are served.
    pub fn allowed_uids(&self) -> &[u32] {
        &self.allowed_uids
    }

    /// Another descriptor of this socket, for an accept loop on another runtime.
    pub(super) fn share(&self) -> io::Result<SharedUnixListener> {
        Ok(SharedUnixListener {
            listener: std::os::unix::net::UnixListener::from(
                self.listener.as_fd().try_clone_to_owned()?,
            ),
            path: self.path.clone(),
            file_id: self.file_id,
            allowed_uids: self.allowed_uids.clone(),
        })
    }

    /// Accepts a connection and checks its peer's uid; a foreign peer's connection is closed (dropped) at once.
    pub(super) async fn accept(&self) -> io::Result<Option<(UnixStream, u32)>> {
        let (stream, _) = self.listener.accept().await?;
        match stream.peer_cred() {
            Ok(cred) if self.allowed_uids.contains(&cred.uid()) => Ok(Some((stream, cred.uid()))),
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = cred.pid(),
                    socket = %self.path.display(),
                    "refused a Unix-socket connection: its uid is not in unix_allowed_uids"
                );
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    socket = %self.path.display(),
                    "refused a Unix-socket connection: its peer credentials could not be read"
                );
                Ok(None)
            }
        }
    }
}

// === impl SharedUnixListener ===

impl SharedUnixListener {
    /// Registers the descriptor with the runtime this is called on.
    pub(super) fn register(self) -> io::Result<UnixSocketListener> {
        self.listener.set_nonblocking(true)?;
        Ok(UnixSocketListener {
            listener: UnixListener::from_std(self.listener)?,
            path: self.path,
            file_id: self.file_id,
            allowed_uids: self.allowed_uids,
            owns_file: false,
        })
    }
}

impl Drop for UnixSocketListener {
    fn drop(&mut self) {
        let ours = self.owns_file
            && fs::symlink_metadata(&self.path)
                .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.file_id);
        if ours && let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(error = %e, socket = %self.path.display(), "cannot remove the socket file");
        }
    }
}

/// Binds a Unix-domain socket at `path`, mode 0600, serving peers whose uid is in `allowed_uids` (`None`: only the
/// uid that owns the new socket file, i.e. this process).
///
/// An existing socket file nobody listens on (left by a crash) is replaced. Anything else at `path` — a live
/// socket, a regular file, a directory — is an error, and is left alone. Between `bind` and `chmod` the file has
/// the umask's mode; the peer-uid check covers that window.
pub async fn bind_unix(
    path: &Path,
    allowed_uids: Option<Vec<u32>>,
    what: &str,
) -> Result<UnixSocketListener, io::Error> {
    let fail = |e: io::Error| {
        io::Error::new(
            e.kind(),
            format!("cannot listen on unix:{} ({what}): {e}", path.display()),
        )
    };
    remove_stale_socket(path).await.map_err(fail)?;
    let listener = UnixListener::bind(path).map_err(fail)?;
    let meta = fs::symlink_metadata(path).map_err(fail)?;
    // From here on, dropping `socket` (on any error too) removes the file.
    let mut socket = UnixSocketListener {
        listener,
        path: path.to_owned(),
        file_id: (meta.dev(), meta.ino()),
        allowed_uids: Vec::new(),
        owns_file: true,
    };
    fs::set_permissions(path, Permissions::from_mode(UNIX_SOCKET_MODE)).map_err(fail)?;
    socket.allowed_uids = allowed_uids.unwrap_or_else(|| vec![meta.uid()]);
    tracing::info!(
        socket = %path.display(),
        mode = %format!("{UNIX_SOCKET_MODE:04o}"),
        allowed_uids = ?socket.allowed_uids,
        "{what}: listening on a Unix socket"
    );
    Ok(socket)
}

/// Removes a socket file left behind by a process that is gone; refuses to touch anything else.
async fn remove_stale_socket(path: &Path) -> Result<(), io::Error> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket; refusing to replace it",
        ));
    }
    match tokio::time::timeout(STALE_SOCKET_PROBE, UnixStream::connect(path)).await {
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            fs::remove_file(path)?;
            tracing::info!(socket = %path.display(), "removed a stale socket file");
            Ok(())
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(io::Error::new(
            e.kind(),
            format!(
                "an existing socket is there and cannot be checked ({e}); refusing to replace it"
            ),
        )),
        Ok(Ok(_)) | Err(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "another process is listening on this socket",
        )),
    }
}
