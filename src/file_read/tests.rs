//! Every kind of path that is not a regular file is refused without blocking; size, permission and time bounds.
//!
//! Each check that could hang on today's code runs under [`within`], so a regression fails instead of hanging.

use std::sync::mpsc;

use super::*;
use crate::test_support::{TempDir, within};

fn private(mode: u32, _uid: u32) -> bool {
    mode & 0o077 != 0
}

#[test]
fn reads_a_regular_file_and_follows_symlinks() {
    let dir = TempDir::new();
    let file = dir.file("secret", b"s3cret\n", 0o600);
    let link = dir.join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    for path in [&file, &link] {
        let bytes = read(path, 64, Access::Private(private)).unwrap();
        assert_eq!(&bytes[..], b"s3cret\n");
    }
    let meta = check(&link, Access::Any).unwrap();
    assert!(meta.is_file());
}

#[test]
fn fifos_sockets_devices_and_directories_are_refused_without_blocking() {
    let dir = TempDir::new();
    let fifo = dir.fifo("fifo");
    let fifo_link = dir.join("fifo-link");
    std::os::unix::fs::symlink(&fifo, &fifo_link).unwrap();
    let socket = dir.join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let cases = [
        (fifo.clone(), "a FIFO (named pipe)"),
        (fifo_link, "a FIFO (named pipe)"),
        (socket, "a socket"),
        (PathBuf::from("/dev/null"), "a character device"),
        (PathBuf::from("/dev/zero"), "a character device"),
        (dir.path().to_path_buf(), "a directory"),
    ];
    for (path, kind) in cases {
        let shown = path.display().to_string();
        let (read_result, check_result) = within({
            let path = path.clone();
            move || {
                (
                    read(&path, 1024, Access::Any).map(|_| ()),
                    check(&path, Access::Any).map(|_| ()),
                )
            }
        });
        for result in [read_result, check_result] {
            let e = result.expect_err(&shown);
            assert!(matches!(e, FileError::NotRegular { .. }), "{shown}: {e:?}");
            assert_eq!(
                e.to_string(),
                format!("{shown} is {kind}, not a regular file")
            );
        }
    }
    // Nothing was opened for reading: a writer opening the FIFO without blocking finds no reader (ENXIO).
    let writer = rustix::fs::open(
        &fifo,
        rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK,
        rustix::fs::Mode::empty(),
    );
    assert_eq!(writer.err(), Some(rustix::io::Errno::NXIO));
}

#[test]
fn a_path_swapped_for_a_fifo_after_the_stat_is_refused_by_fstat() {
    let dir = TempDir::new();
    let fifo = dir.fifo("fifo");
    // The second half of `open_regular` alone, as if the first `stat` had seen a regular file.
    let e = within(move || open_then_fstat(&fifo).map(|_| ())).unwrap_err();
    assert!(
        matches!(
            e,
            FileError::NotRegular {
                kind: "a FIFO (named pipe)",
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn size_limit_and_missing_files() {
    let dir = TempDir::new();
    let file = dir.file("big", [b'x'; 100], 0o600);
    assert_eq!(read(&file, 100, Access::Any).unwrap().len(), 100);
    let e = read(&file, 99, Access::Any).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("{} is larger than 99 bytes", file.display())
    );
    let missing = dir.join("missing");
    let e = read(&missing, 10, Access::Any).unwrap_err();
    assert!(e.is_not_found(), "{e:?}");
    assert!(
        e.to_string()
            .starts_with(&format!("cannot open {}: ", missing.display()))
    );
}

#[test]
fn private_files_are_refused_before_reading_when_shared() {
    let dir = TempDir::new();
    let file = dir.file("shared", b"canary-SECRET", 0o644);
    let e = read(&file, 64, Access::Private(private)).unwrap_err();
    assert!(matches!(e, FileError::Shared { mode: 0o644, .. }), "{e:?}");
    assert!(!format!("{e} {e:?}").contains("canary"));
    assert!(check(&file, Access::Private(private)).is_err());
    assert!(read(&file, 64, Access::Any).is_ok());
}

#[test]
fn a_read_that_hangs_is_abandoned_at_the_timeout_naming_the_file() {
    static LIMIT: Limiter = Limiter::new(4);
    let (release, hung) = mpsc::channel::<()>();
    let path = Path::new("/mnt/hung-nfs/secret");
    // A read that blocks until released, as a read on a hung network mount does.
    let e = off_thread_limited(&LIMIT, path, Duration::from_millis(100), move || {
        let _ = hung.recv();
    })
    .unwrap_err();
    assert!(matches!(e, FileError::TimedOut { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "reading /mnt/hung-nfs/secret did not finish within 0.1s (a hung network mount?)"
    );
    assert_eq!(
        LIMIT.running.load(Ordering::SeqCst),
        1,
        "the stuck read still counts"
    );
    release.send(()).unwrap();
    let deadline = std::time::SystemTime::now() + Duration::from_secs(10);
    while LIMIT.running.load(Ordering::SeqCst) != 0 {
        assert!(
            std::time::SystemTime::now() < deadline,
            "the released read never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn stuck_reads_cannot_pile_up_threads() {
    static LIMIT: Limiter = Limiter::new(2);
    let (release, hung) = mpsc::channel::<()>();
    let hung = std::sync::Arc::new(std::sync::Mutex::new(hung));
    let path = Path::new("/mnt/hung-nfs/token");
    for _ in 0..2 {
        let hung = hung.clone();
        let e = off_thread_limited(&LIMIT, path, Duration::from_millis(20), move || {
            let _ = hung.lock().unwrap().recv();
        })
        .unwrap_err();
        assert!(matches!(e, FileError::TimedOut { .. }), "{e:?}");
    }
    let e = off_thread_limited(&LIMIT, path, Duration::from_millis(20), || ()).unwrap_err();
    assert!(matches!(e, FileError::Busy { .. }), "{e:?}");
    assert!(
        e.to_string()
            .starts_with("not reading /mnt/hung-nfs/token: "),
        "{e}"
    );
    // Once the stuck reads end, reads run again.
    release.send(()).unwrap();
    release.send(()).unwrap();
    let deadline = std::time::SystemTime::now() + Duration::from_secs(10);
    while LIMIT.running.load(Ordering::SeqCst) != 0 {
        assert!(
            std::time::SystemTime::now() < deadline,
            "the released reads never ended"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        off_thread_limited(&LIMIT, path, Duration::from_secs(10), || 7).unwrap(),
        7
    );
}

#[tokio::test]
async fn async_reads_run_off_the_runtime_and_are_bounded_too() {
    let dir = TempDir::new();
    let file = dir.file("token", b"eyJ", 0o600);
    assert_eq!(
        &read_async(&file, 16, Access::Any).await.unwrap()[..],
        b"eyJ"
    );
    let fifo = dir.fifo("fifo");
    let e = tokio::time::timeout(Duration::from_secs(10), read_async(&fifo, 16, Access::Any))
        .await
        .expect("a FIFO blocked the async read")
        .unwrap_err();
    assert!(matches!(e, FileError::NotRegular { .. }), "{e:?}");
    // A blocking job on the current-thread runtime: the runtime keeps running timers meanwhile.
    let (release, hung) = mpsc::channel::<()>();
    let e = off_thread_async(Path::new("/mnt/x"), Duration::from_millis(100), move || {
        let _ = hung.recv();
    })
    .await
    .unwrap_err();
    assert!(matches!(e, FileError::TimedOut { .. }), "{e:?}");
    release.send(()).unwrap();
}
